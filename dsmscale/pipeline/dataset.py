"""The Ray Data chain of a job, in one place: read the work units → cut their boxes (CPU tasks) →
predict and write them (an actor pool, one model per actor).

Memory is bounded by Ray Data's object-store budget for units waiting for an actor
(`configure_data_context`), whatever the size of the job.
"""

from __future__ import annotations

from dataclasses import asdict

from dsmscale.io.job import JobFolder
from dsmscale.pipeline.config import RunConfig
from dsmscale.pipeline.plan import WorkUnit
from dsmscale.pipeline.tasks import InferenceActor, cut_unit

IO_ERROR_PATTERN = r"\[Errno \d+\]"  # how every OSError's message starts


def build_dataset(units: list[WorkUnit], config: RunConfig, checkpoint: str, job: JobFolder,
                  compile: str, gpus_per_actor: float):
    """The job as a lazy Ray Dataset of one row per finished unit (its counts and timings)."""
    import ray

    ds = ray.data.from_items([asdict(u) for u in units], override_num_blocks=len(units))
    ds = ds.map_batches(cut_unit, batch_size=1, fn_kwargs={"box": config.box},
                        num_cpus=config.cpus_per_extract_task, max_retries=3)
    return ds.map_batches(
        InferenceActor, batch_size=1, compute=actor_pool(config), num_gpus=gpus_per_actor,
        num_cpus=config.cpus_per_actor, max_restarts=config.max_actor_restarts,
        max_task_retries=config.max_actor_restarts,
        fn_constructor_kwargs={"checkpoint": checkpoint, "job": str(job.root),
                               "batch_size": config.batch_size,
                               "threads": config.threads_per_actor, "compile": compile})


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
