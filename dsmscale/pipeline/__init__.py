"""``dsmscale run``: the whole job on Ray — inputs named and converted, particles read or picked,
work units planned (`plan`), boxes cut and predicted on Ray Data (`dataset`, `tasks`, `sink`),
outputs assembled (`outputs`), features clustered, and the report written (`run`)."""

from dsmscale.pipeline.config import RunConfig
from dsmscale.pipeline.run import run_job

__all__ = ["RunConfig", "run_job"]
