"""``dsmscale run``: the whole job, resumable and exactly-once per work unit.

Stages: name the inputs (`dsmscale.pipeline.inputs`; before the job folder exists) → convert them
(MRC → OME-Zarr as Ray tasks) → particles (tables or the DoG picker) → plan the work units
(metadata only, saved with the job's identity; `dsmscale.pipeline.plan`; each tomogram read at
the coarsest pyramid level not coarser than the model's voxel size, its boxes resampled to the
model's grid where the sizes differ, `open_for_model`) → the Ray Data chain
(`dsmscale.pipeline.dataset`: cut boxes in CPU tasks, predict and write on an actor pool) →
tomogram-scale maps, STAR and copick tables (`dsmscale.pipeline.outputs`) → the reduce stage
(`dsmscale.discovery`) → the report and, last, ``summary.json``. A rerun with the same identity
reuses the saved plan and skips units whose Parquet part exists.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint, model_grid
from dsmscale.errors import InputError
from dsmscale.extraction import all_skipped_error, choose_level
from dsmscale.io.atomic import writable_folder, write_file_atomic
from dsmscale.io.job import JobFolder
from dsmscale.io.omezarr import Tomogram, open_tomogram
from dsmscale.parallel import ensure_ray
from dsmscale.pipeline.config import COMPILE_MIN_PARTICLES, RunConfig
from dsmscale.pipeline.dataset import build_dataset, configure_data_context, unit_results
from dsmscale.pipeline.inputs import JobInputs, name_inputs, resolve_particles, resolve_tomograms
from dsmscale.pipeline.plan import IDENTITY, JobPlan, plan_units
from dsmscale.pipeline.sink import create_outputs
from dsmscale.report.job import write_job_report
from dsmscale.resampling import TOLERANCE, needs_resampling
from dsmscale.weights import resolve_model


def compile_mode(config: RunConfig, particles: int) -> str:
    """The actors' compile setting: 'auto' stays 'auto' (compile where Inductor can) only when each
    actor has enough particles to amortise the one-off compile time, else 'off'."""
    if config.compile != "auto":
        return config.compile
    actors = config.num_actors[1] if isinstance(config.num_actors, tuple) else config.num_actors
    return "auto" if particles / actors >= COMPILE_MIN_PARTICLES else "off"


def run_inference(config: RunConfig, plan: JobPlan, job: JobFolder, checkpoint: Path) -> dict:
    """Stream the pending units through the Ray Data chain; returns counts and timings."""
    import ray

    todo = plan.units[~plan.units["unit_id"].isin(job.finished_units())]
    stats = {"units_total": len(plan.units), "units_skipped": len(plan.units) - len(todo),
             "particles_done_before": plan.n_particles - int(todo["n"].sum())}
    if todo.empty:  # every unit was done by an earlier run: no throughput to report
        return stats | {"particles_processed": 0, "inference_s": 0.0, "particles_per_s": None,
                        "particles_per_node": {}, "actor_time_s": {}}
    gpus = config.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    total = int(todo["n"].sum())
    configure_data_context(config.object_store_budget_gb, config.io_retries)
    ds = build_dataset(plan.work_units(todo), config, str(checkpoint), job,
                       compile_mode(config, total), gpus)
    start = time.perf_counter()
    per_node: dict[str, int] = {}
    actor_s = {"model_s": 0.0, "write_s": 0.0}
    with tqdm(total=total, unit="particle", desc="inference", smoothing=0.1) as bar:
        for batch in unit_results(ds):
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


def _voxels_text(tomo: Tomogram) -> str:
    """'8 Å' or '12 × 9 × 7.5 Å' (z, y, x) for a tomogram level's voxel size."""
    return " × ".join(f"{v:g}" for v in dict.fromkeys(tomo.voxel_size_zyx_a)) + " Å"


def open_for_model(store: str, config: RunConfig, model_voxel_a: float) -> Tomogram:
    """The tomogram at the level the boxes are cut from: ``config.level``, or the coarsest
    whose voxels are no coarser than the model's (`dsmscale.extraction.choose_level`).

    Raises:
        InputError: with ``resample`` off, a voxel size more than 10 % off the model's (one
            line naming the store, its voxel size and the model's).
    """
    full = open_tomogram(store, 0)
    tolerance = TOLERANCE if config.resample else STRICT_TOLERANCE
    level = choose_level(config.level, full.pyramid_voxel_zyx_a, model_voxel_a, tolerance)
    tomo = open_tomogram(store, level)
    if not config.resample and needs_resampling(tomo.voxel_size_zyx_a, model_voxel_a,
                                                STRICT_TOLERANCE):
        raise InputError(store, f"{_voxels_text(tomo)} per voxel at level {level}, the model "
                                f"takes {model_voxel_a:g} Å and resample is off")
    return tomo


def grid_notes(plan: JobPlan, model_voxel_a: float) -> list[str]:
    """One line per tomogram whose boxes were resampled to the model's voxel size."""
    notes = []
    units = plan.units.drop_duplicates("tomogram")
    for store, level, grid in units[["store", "level", "resample_to_a"]].itertuples(index=False):
        tomo = open_tomogram(store, int(level))
        if not np.isnan(grid) and needs_resampling(tomo.voxel_size_zyx_a, grid):
            notes.append(f"{store}: boxes resampled from {_voxels_text(tomo)} (level {level}) "
                         f"to the model's {model_voxel_a:g} Å")
    return notes


#: The version of a job folder's layout (2: outputs indexed by ``box_index`` and
#: ``first_box``; 3: units record the voxel size their boxes are resampled to): a folder of
#: another layout is refused rather than resumed.
JOB_LAYOUT = 3
#: With ``resample`` off, how far a tomogram's voxel size may be off the model's.
STRICT_TOLERANCE = 0.1


def job_identity(config: RunConfig, model_run: str) -> dict:
    """What a job's plan and finished units depend on: its inputs, box, level, resampling, edge
    handling, unit size, picker (without tables), model and the folder's layout. A rerun resumes
    only when it matches."""
    fields = {"tomograms", "particles", "box", "level", "resample", "edge", "voxel_size_a",
              "tomogram_set", "copick_tomogram_type", "copick_voxel_spacing_a",
              "max_particles_per_unit"} | (
        {"without_particles", "pick"} if config.particles else {"pick"})
    return config.model_dump(mode="json", include=fields) | {"model_run": model_run,
                                                             "layout": JOB_LAYOUT}


def check_resumable(job: JobFolder, identity: dict) -> None:
    """Refuse to resume a job folder planned for other inputs, settings or model (mixing the
    finished units of one job with another's would give wrong results without a sign)."""
    saved_file = job.plan / IDENTITY
    if not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    differ = sorted(k for k in saved.keys() | identity.keys() if saved.get(k) != identity.get(k))
    if differ:
        raise InputError(job.root, f"holds a job made with other {', '.join(differ)}: use "
                                   "another output folder, or delete this one to start again")


def load_or_plan(config: RunConfig, inputs: JobInputs, job: JobFolder, identity: dict,
                 timings: dict, model_voxel_a: float) -> JobPlan:
    """The saved plan, or inputs converted, particles read (or picked) and a new plan saved
    (boxes on the model's grid of ``model_voxel_a`` Å unless ``resample`` is off)."""
    if (job.plan / IDENTITY).is_file():
        return JobPlan.load(job.plan)
    start = time.perf_counter()
    stores = resolve_tomograms(inputs, config, job)
    timings["convert_s"] = time.perf_counter() - start
    tomograms = {n: open_for_model(s, config, model_voxel_a) for n, s in stores.items()}
    start = time.perf_counter()
    tables = resolve_particles(inputs, config, tomograms)
    timings["particles_s"] = time.perf_counter() - start
    if not sum(len(t) for t in tables.values()):
        raise InputError(None, "no particles to process (empty tables and no picks)")
    start = time.perf_counter()
    tables = {n: t for n, t in tables.items() if len(t)}  # no picks: nothing to do there
    tomograms = {n: t for n, t in tomograms.items() if n in tables}  # nor where 'skip' said
    plan = plan_units(tomograms, tables, config.box, config.edge, config.max_particles_per_unit,
                      job.plan, identity, model_voxel_a if config.resample else None)
    timings["plan_s"] = time.perf_counter() - start
    return plan


def run_discovery(config: RunConfig, job: JobFolder, n_particles: int) -> dict | None:
    """The reduce stage, when configured and the model has a classification head."""
    from dsmscale.discovery import discover

    if config.discover is None or "features" not in job.columns():
        return None
    if n_particles < 10:
        return {"skipped": f"{n_particles} particles are too few to cluster"}
    k = min(config.discover.k, max(2, n_particles // 5))
    summary = discover(job, config.discover.model_copy(update={"k": k}))
    return {"k": k, "low_confidence_clusters": summary["low_confidence_clusters"],
            "folder": str(job.discovery)}


def open_job_folder(config: RunConfig) -> JobFolder:
    """Create (or reopen, to resume) the job folder. Its ``summary.json`` marks a finished job,
    so an old one is removed first: while this run works, the job is not complete."""
    job = JobFolder(writable_folder(config.output))
    job.summary.unlink(missing_ok=True)
    job.config.write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    return job


def run_job(config: RunConfig) -> dict:
    """Run (or resume) a job; returns the summary also written to OUTPUT/summary.json."""
    checkpoint = resolve_model(config.model)
    ckpt = load_checkpoint(checkpoint)
    model_from_checkpoint(ckpt, checkpoint)  # fail here, in one line
    config = with_model_box(config, ckpt, checkpoint)
    identity = job_identity(config, ckpt.get("run_hash") or str(checkpoint))
    check_resumable(JobFolder(config.output), identity)  # before a finished job is touched
    inputs = name_inputs(config)
    job = open_job_folder(config)
    start, timings = time.perf_counter(), {}
    ensure_ray(config.ray_address)
    model_voxel_a = model_grid(ckpt)[1]
    plan = load_or_plan(config, inputs, job, identity, timings, model_voxel_a)
    if plan.units.empty:
        raise all_skipped_error(len(plan.skipped), None)
    resampled = grid_notes(plan, model_voxel_a)
    for line in resampled:
        print(f"dsmscale run: {line}", file=sys.stderr)
    create_outputs(job, plan.n_boxes, config.box)
    stats = run_inference(config, plan, job, checkpoint)
    timings["inference_s"] = stats.pop("inference_s")
    return _finish(config, job, plan, stats, timings, resampled, start, checkpoint)


def _finish(config: RunConfig, job: JobFolder, plan: JobPlan, stats: dict, timings: dict,
            resampled: list[str], start: float, checkpoint: Path) -> dict:
    """The job's tables, maps, discovery, report and — last — its summary."""
    from dsmscale.pipeline.outputs import write_job_tables, write_maps

    t0 = time.perf_counter()
    tables = write_job_tables(job, plan)
    if config.write_maps:
        write_maps(job, plan, config.box)
    timings["sinks_s"] = time.perf_counter() - t0
    discovery = run_discovery(config, job, plan.n_particles)
    timings["discover_s"] = time.perf_counter() - t0 - timings["sinks_s"]
    wall = time.perf_counter() - start
    summary = {"particles": plan.n_particles, "tomograms": int(plan.units["tomogram"].nunique()),
               "skipped_at_edge": len(plan.skipped), **stats, "wall_s": wall,
               "end_to_end_per_s": stats["particles_processed"] / wall if wall else 0.0,
               "timings_s": timings, "model": str(checkpoint), "outputs": tables,
               "discovery": discovery, "resampled": resampled, "warnings": []}
    write_job_report(job, summary, json.loads(job.discovery_summary.read_text())
                     if discovery and "k" in discovery else None)
    write_file_atomic(job.summary, lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return summary

