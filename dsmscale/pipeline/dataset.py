"""The Ray Data chain of a job, in one place: read the work units → cut their boxes (CPU tasks) →
predict and write them (an actor pool, one model per actor).

Memory is bounded by Ray Data's object-store budget for units waiting for an actor
(`configure_data_context`), whatever the size of the job; the driver reads the results without
Ray Data's batch iterator, whose metrics grow with the job (`unit_results`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import numpy as np

from dsmscale.io.job import JobFolder
from dsmscale.pipeline.config import RunConfig
from dsmscale.pipeline.plan import WorkUnit
from dsmscale.pipeline.tasks import InferenceActor, cut_unit

IO_ERROR_PATTERN = r"\[Errno \d+\]"  # how every OSError's message starts


def build_dataset(units: list[WorkUnit], config: RunConfig, checkpoint: str, job: JobFolder,
                  compile: str, gpus_per_actor: float, actor: type = InferenceActor):
    """The job as a lazy Ray Dataset of one row per finished unit (its counts and timings).
    ``actor`` is the model actor's class (`InferenceActor`; a benchmark may vary it)."""
    import ray

    ds = ray.data.from_items([asdict(u) for u in units], override_num_blocks=len(units))
    ds = ds.map_batches(cut_unit, batch_size=1, fn_kwargs={"box": config.box},
                        num_cpus=config.cpus_per_extract_task, max_retries=3)
    return ds.map_batches(
        actor, batch_size=1, compute=actor_pool(config), num_gpus=gpus_per_actor,
        num_cpus=config.cpus_per_actor, max_restarts=config.max_actor_restarts,
        max_task_retries=config.max_actor_restarts,
        fn_constructor_kwargs={"checkpoint": checkpoint, "job": str(job.root),
                               "batch_size": config.batch_size,
                               "threads": config.threads_per_actor, "compile": compile})


def unit_results(ds) -> Iterator[dict[str, np.ndarray]]:
    """The finished units' rows (counts and timings) of the chain, as numpy batches, in the
    order they finish.

    Not ``ds.iter_batches()``: its iterator sends its whole ``DatasetStats`` to Ray Data's
    ``_StatsActor`` every 5 s, and that object holds an entry per input unit and per block of
    each stage so far (1–2 MB pickled at 2,000 units). Past 100 kB Ray passes each report
    through the object store, so the driver and the stats actor map ever more shared pages and
    the stats actor's heap grows: the summed RSS of a 10⁶-particle job crept ~2 % per quarter.
    Iterating the ref bundles sends no iteration metrics (the results are a few numbers per
    unit, so nothing is lost by skipping the batch iterator's prefetching).
    """
    import ray
    from ray.data.block import BlockAccessor

    for bundle in ds.iter_internal_ref_bundles():
        for block in ray.get(bundle.block_refs):
            yield BlockAccessor.for_block(block).to_numpy()


def actor_pool(config: RunConfig):
    """A fixed pool of ``num_actors`` actors, or one autoscaling between (min, max)."""
    from ray.data import ActorPoolStrategy

    if isinstance(config.num_actors, tuple):
        low, high = config.num_actors
        return ActorPoolStrategy(min_size=low, max_size=high)
    return ActorPoolStrategy(size=config.num_actors)


def configure_data_context(budget_gb: float, io_retries: int) -> None:
    """Cap the object-store memory Ray Data may fill with cut units, and retry I/O errors.

    Extraction outruns the model, and Ray Data's default budget is a share of the node's RAM, so
    without a cap the queue of boxes waiting for an actor grows with the machine rather than
    staying a few units. Ray Data retries no user error by default; an ``OSError`` (a network
    file system hiccup, a full disk) in an extraction task or a model actor is retried in place
    ``io_retries`` times with backoff, while bad input (`InputError`) fails at once. Errors
    reach the driver as raised (not wrapped in Ray Data's ``UserCodeException``, whose pickled
    form drops the cause), so the CLI can report them in one line.
    """
    from ray.data import DataContext, ExecutionResources

    context = DataContext.get_current()
    context.execution_options.resource_limits = ExecutionResources.for_limits(
        object_store_memory=budget_gb * 1e9)
    context.retried_map_errors = [IO_ERROR_PATTERN]
    context.max_map_retries = io_retries
    context.raise_original_map_exception = True
