"""``dsmscale run``: the whole job on Ray Data, resumable and exactly-once per work unit.

Stages: name the inputs (`dsmscale.infer.inputs`; before the job folder exists) → convert them
(MRC → OME-Zarr as Ray tasks) → particles (tables or the DoG picker) → plan work units (metadata
only, saved with the job's identity) → Ray Data: ``map_batches(extract_batch)`` as CPU tasks →
``map_batches(Predictor, compute=ActorPoolStrategy(...), num_gpus=...)``, whose actors write each
unit's outputs and then its Parquet part atomically → tomogram-scale maps, STAR and copick
tables, the report, ``summary.json``. A rerun with the same identity reuses the saved plan and
skips units whose part exists.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from tqdm.auto import tqdm

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint, model_grid
from dsmscale.errors import InputError
from dsmscale.extract import every_box_skipped
from dsmscale.infer.config import COMPILE_MIN_PARTICLES, RunConfig
from dsmscale.infer.inputs import JobInputs, name_inputs, resolve_particles, resolve_tomograms
from dsmscale.infer.predictor import Predictor, extract_batch
from dsmscale.infer.units import IDENTITY, ROW_CHUNK, Plan, plan_units
from dsmscale.io.atomic import writable_folder, write_file_atomic
from dsmscale.io.omezarr import compressor_for, open_tomogram
from dsmscale.parallel import ensure_ray
from dsmscale.report.job import write_job_report
from dsmscale.weights import resolve_model

IO_ERROR_PATTERN = r"\[Errno \d+\]"  # how every OSError's message starts


def _create_outputs(out: Path, n_rows: int, box: int) -> None:
    for name, dtype in (("segmentation", "uint8"), ("density", "float32")):
        path = out / f"{name}.zarr"
        if not path.exists():
            zarr.create_array(str(path), shape=(n_rows, box, box, box),
                              chunks=(ROW_CHUNK, box, box, box), dtype=dtype,
                              compressors=compressor_for(3, "lz4", 5), zarr_format=3,
                              dimension_names=("particle", "z", "y", "x"))
    (out / "particles.parquet").mkdir(exist_ok=True)


def pending_units(plan: Plan, out: Path) -> pd.DataFrame:
    """Units without a finished Parquet part."""
    done = {p.stem for p in (out / "particles.parquet").glob("*.parquet")}
    return plan.units[~plan.units["unit_id"].isin(done)]


def _unit_items(units: pd.DataFrame, plan: Plan) -> list[dict]:
    """One small record per unit: its particles stay in the saved plan until a task reads them."""
    return [{"unit_id": row.unit_id, "tomogram": row.tomogram, "store": row.store,
             "level": int(row.level), "row0": int(row.row0), "plan": str(plan.folder)}
            for row in units.itertuples()]


def _actor_pool(config: RunConfig):
    from ray.data import ActorPoolStrategy

    if isinstance(config.num_actors, tuple):
        low, high = config.num_actors
        return ActorPoolStrategy(min_size=low, max_size=high)
    return ActorPoolStrategy(size=config.num_actors)


def compile_mode(config: RunConfig, particles: int) -> str:
    """The actors' compile setting: 'auto' stays 'auto' (compile where Inductor can) only when each
    actor has enough particles to amortise the one-off compile time, else 'off'."""
    if config.compile != "auto":
        return config.compile
    actors = config.num_actors[1] if isinstance(config.num_actors, tuple) else config.num_actors
    return "auto" if particles / actors >= COMPILE_MIN_PARTICLES else "off"


def configure_data_context(budget_gb: float, io_retries: int) -> None:
    """Cap the object-store memory Ray Data may fill with extracted units, and retry I/O errors.

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


def run_inference(config: RunConfig, plan: Plan, out: Path, checkpoint: Path) -> dict:
    """Stream the pending units through Ray Data; returns counts and timings."""
    import ray

    todo = pending_units(plan, out)
    stats = {"units_total": len(plan.units), "units_skipped": len(plan.units) - len(todo),
             "particles_done_before": int(plan.units["n"].sum() - todo["n"].sum())}
    if todo.empty:  # every unit was done by an earlier run: no throughput to report
        return stats | {"particles_processed": 0, "inference_s": 0.0, "particles_per_s": None,
                        "particles_per_node": {}, "actor_time_s": {}}
    gpus = config.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    total = int(todo["n"].sum())
    configure_data_context(config.object_store_budget_gb, config.max_restarts)
    ds = ray.data.from_items(_unit_items(todo, plan), override_num_blocks=len(todo))
    ds = ds.map_batches(extract_batch, batch_size=1, fn_kwargs={"box": config.box},
                        num_cpus=config.cpus_per_extract_task, max_retries=3)
    ds = ds.map_batches(
        Predictor, batch_size=1, compute=_actor_pool(config), num_gpus=gpus,
        num_cpus=config.cpus_per_actor, max_restarts=config.max_restarts,
        max_task_retries=config.max_restarts,
        fn_constructor_kwargs={"checkpoint": str(checkpoint), "output": str(out),
                               "batch_size": config.batch_size,
                               "threads": config.threads_per_actor, "box": config.box,
                               "compile": compile_mode(config, total)})
    start = time.perf_counter()
    per_node: dict[str, int] = {}
    actor_s = {"model_s": 0.0, "write_s": 0.0}
    with tqdm(total=total, unit="particle", desc="inference", smoothing=0.1) as bar:
        for batch in ds.iter_batches(batch_size=None):
            for node, n in zip(batch["node"], batch["n"], strict=True):
                per_node[str(node)] = per_node.get(str(node), 0) + int(n)
            for key in actor_s:
                actor_s[key] += float(np.sum(batch[key]))
            bar.update(int(np.sum(batch["n"])))
    elapsed = time.perf_counter() - start
    return stats | {"particles_processed": total, "inference_s": elapsed,
                    "particles_per_s": total / elapsed if elapsed else 0.0,
                    "particles_per_node": per_node, "actor_time_s": actor_s}


def with_model_box(config: RunConfig, ckpt: dict, source: Path) -> RunConfig:
    """The config with the model's box; a job asking for another box is an error."""
    box = model_grid(ckpt)[0]
    if config.box not in (None, box):
        raise InputError(source, f"takes {box}³ boxes, not the job's box of {config.box}")
    return config.model_copy(update={"box": box})


def voxel_size_warnings(plan: Plan, model_voxel_a: float) -> list[str]:
    """Tomograms whose voxel size (at the level the model sees) is more than 10 % off the one
    the model was trained at: its features, classes and masks are then of doubtful worth."""
    warnings = []
    for store, level in plan.units[["store", "level"]].drop_duplicates().itertuples(index=False):
        vs = open_tomogram(store, int(level)).voxel_size_a
        if abs(vs / model_voxel_a - 1) > 0.1:
            warnings.append(f"{store}: {vs:g} Å per voxel at level {level}, the model was "
                            f"trained at {model_voxel_a:g} Å (choose --level to match)")
    return warnings


def job_identity(config: RunConfig, model_run: str) -> dict:
    """What a job's plan and finished units depend on: its inputs, box, level, edge handling,
    unit size, picker (without tables) and model. A rerun resumes only when it matches."""
    fields = {"tomograms", "particles", "box", "level", "edge", "voxel_size_a",
              "max_particles_per_unit"} | (set() if config.particles else {"pick"})
    return config.model_dump(mode="json", include=fields) | {"model_run": model_run}


def check_resumable(out: Path, identity: dict) -> None:
    """Refuse to resume a job folder planned for other inputs, settings or model (mixing the
    finished units of one job with another's would give wrong results without a sign)."""
    saved_file = out / "plan" / IDENTITY
    if not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    differ = sorted(k for k in saved.keys() | identity.keys() if saved.get(k) != identity.get(k))
    if differ:
        raise InputError(out, f"holds a job made with other {', '.join(differ)}: use another "
                         "output folder, or delete this one to start again")


def _load_or_plan(config: RunConfig, inputs: JobInputs, out: Path, identity: dict,
                  timings: dict) -> Plan:
    plan_dir = out / "plan"
    if (plan_dir / IDENTITY).is_file():
        return Plan.load(plan_dir)
    t0 = time.perf_counter()
    stores = resolve_tomograms(inputs, config, out)
    timings["convert_s"] = time.perf_counter() - t0
    tomograms = {n: open_tomogram(s, config.level) for n, s in stores.items()}
    t0 = time.perf_counter()
    tables = resolve_particles(inputs, config, tomograms)
    timings["particles_s"] = time.perf_counter() - t0
    if not sum(len(t) for t in tables.values()):
        raise InputError(None, "no particles to process (empty tables and no picks)")
    t0 = time.perf_counter()
    plan = plan_units(tomograms, tables, config.box, config.edge, config.max_particles_per_unit,
                      plan_dir, identity)
    timings["plan_s"] = time.perf_counter() - t0
    return plan


def _discover(config: RunConfig, out: Path, n_particles: int) -> dict | None:
    """The reduce stage, when configured and the model has a classification head."""
    from dsmscale.discover import discover

    if config.discover is None or "features" not in read_results_schema(out):
        return None
    if n_particles < 10:
        return {"skipped": f"{n_particles} particles are too few to cluster"}
    k = min(config.discover.k, max(2, n_particles // 5))
    summary = discover(out, config.discover.model_copy(update={"k": k}))
    return {"k": k, "low_confidence_clusters": summary["low_confidence_clusters"],
            "folder": str(out / "discovery")}


def read_results_schema(out: Path) -> list[str]:
    import pyarrow.dataset as pads

    return pads.dataset(out / "particles.parquet", format="parquet").schema.names


def open_job_folder(out: Path) -> Path:
    """Create (or reopen, to resume) the job folder. Its ``summary.json`` marks a finished job,
    so an old one is removed first: while this run works, the job is not complete."""
    writable_folder(out)
    (out / "summary.json").unlink(missing_ok=True)
    return out


def run_job(config: RunConfig) -> dict:
    """Run (or resume) a job; returns the summary also written to OUTPUT/summary.json."""
    checkpoint = resolve_model(config.model)
    ckpt = load_checkpoint(checkpoint)
    model_from_checkpoint(ckpt, checkpoint)  # fail here, in one line
    config = with_model_box(config, ckpt, checkpoint)
    identity = job_identity(config, ckpt.get("run_hash") or str(checkpoint))
    check_resumable(Path(config.output), identity)  # before anything of a finished job is touched
    inputs = name_inputs(config)
    out = open_job_folder(Path(config.output))
    (out / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    start, timings = time.perf_counter(), {}
    ensure_ray(config.ray_address)
    plan = _load_or_plan(config, inputs, out, identity, timings)
    if plan.units.empty:
        raise every_box_skipped(len(plan.skipped), None)
    warnings = voxel_size_warnings(plan, model_grid(ckpt)[1])
    for line in warnings:
        print(f"dsmscale run: warning: {line}", file=sys.stderr)
    _create_outputs(out, plan.n_rows, config.box)
    stats = run_inference(config, plan, out, checkpoint)
    timings["inference_s"] = stats.pop("inference_s")
    t0 = time.perf_counter()
    from dsmscale.infer.sinks import write_job_tables, write_maps

    tables = write_job_tables(out, plan)
    if config.write_maps:
        write_maps(out, plan, config.box)
    timings["sinks_s"] = time.perf_counter() - t0
    discovery = _discover(config, out, int(plan.units["n"].sum()))
    timings["discover_s"] = time.perf_counter() - t0 - timings["sinks_s"]
    wall = time.perf_counter() - start
    summary = {"particles": int(plan.units["n"].sum()), "tomograms": int(plan.units["tomogram"].nunique()),
               "skipped_at_edge": len(plan.skipped), **stats, "wall_s": wall,
               "end_to_end_per_s": stats["particles_processed"] / wall if wall else 0.0,
               "timings_s": timings, "model": str(checkpoint), "outputs": tables,
               "discovery": discovery, "warnings": warnings}
    discovery_summary = out / "discovery" / "summary.json"
    write_job_report(out, summary, json.loads(discovery_summary.read_text())
                     if discovery and "k" in discovery else None)
    # last: summary.json is the mark of a finished job
    write_file_atomic(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return summary
