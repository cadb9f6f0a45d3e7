"""Benchmark: the inference job end to end vs the model alone vs a naive loop, and where the job's
writes happen, in one run.

Usage: python jobs/bench_pipeline.py [--particles 3000] [--checkpoint CKPT] [--threads 2]

- model-only: `dsmscale.inference.Predictor` (the actor's own code: same model, threads,
  precision, channels_last_3d, batch size) on in-memory batches, eager and torch.compile'd (with
  the one-off compile time; a second compile in the same machine reuses Inductor's cache);
- end-to-end: `run_job` (compile on) on an OME-Zarr tomogram with a particle table (embedded Ray,
  one actor; the discovery reduce stage is off — `jobs/bench_discover.py` times it), rate over
  the whole job wall time and over the inference stage;
- sink placement: the inference stage of the same job (compile off) with the actor writing each
  unit through its own `UnitSink` (as the job does) against a chain where the actor hands its
  outputs (≈ 320 KB per particle) through Ray's object store to a separate write stage;
- naive: mrcfile memmap, a numpy crop per particle, batch-1 fp32 forward per particle (capped).
Memory of the job: the summed RSS and PSS of this process and all its children (Ray), sampled
every second; PSS splits shared pages (the object store, libraries) between the processes that
map them, RSS counts them once per process and so overstates the total.
Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import torch

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint
from dsmscale.conversion import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.geometry import box_starts
from dsmscale.hardware import configure_threads
from dsmscale.inference import Predictor
from dsmscale.io.job import JobFolder
from dsmscale.io.mrc import write_volume
from dsmscale.io.particles import make_particles, write_csv
from dsmscale.pipeline import RunConfig, run_job
from dsmscale.pipeline.dataset import build_dataset, configure_data_context, unit_results
from dsmscale.pipeline.plan import JobPlan
from dsmscale.pipeline.sink import CutUnit, UnitSink, create_outputs
from dsmscale.pipeline.tasks import InferenceActor
from dsmscale.profiling import TreeMemory, boxes_per_second, emit
from dsmscale.weights import resolve_model


def model_only(checkpoint: Path, batch: int, threads: int, compile: str,
               seconds: float = 20.0) -> tuple[float, str, float]:
    """Subtomograms/s of the actor's predictor on in-memory batches; precision, compile s."""
    configure_threads(threads)
    predictor = Predictor(checkpoint, batch, compile=compile)
    rate = boxes_per_second(predictor, batch, seconds)
    return rate, predictor.model.precision, predictor.model.compile_s


def naive(checkpoint: Path, mrc: Path, centres: np.ndarray, threads: int) -> float:
    configure_threads(threads)
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    data = mrcfile.mmap(mrc, mode="r").data
    start = time.perf_counter()
    with torch.inference_mode():
        for z, y, x in box_starts(centres, 40):
            box = np.array(data[z:z + 40, y:y + 40, x:x + 40], dtype=np.float32)
            box = (box - box.mean()) / box.std()
            model(torch.from_numpy(box)[None, None])
    return len(centres) / (time.perf_counter() - start)


class PredictOnly(InferenceActor):
    """The job's actor, but handing its outputs on instead of writing them."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.predictor(batch["boxes"][0])
        return {**{k: v for k, v in batch.items() if k != "boxes"},
                **{f"out_{k}": v[None] for k, v in outputs.items()}}


def write_stage(batch: dict[str, np.ndarray], job: str, classes: list[str]) -> dict:
    """The write stage: one unit's outputs, written as the actor's sink would."""
    unit = CutUnit.from_batch(batch | {"boxes": np.zeros((1, 0))})
    outputs = {k.removeprefix("out_"): v[0] for k, v in batch.items() if k.startswith("out_")}
    UnitSink(JobFolder(job), classes).write(unit, outputs)
    return {"n": np.array([len(unit)])}


def inference_stage(config: RunConfig, plan: JobPlan, checkpoint: Path, sink_stage: bool) -> float:
    """Particles/s of the inference stage of a planned job into a fresh job folder, with the
    actor as its own writer or with a separate write stage."""
    job = JobFolder(Path(config.output).with_name(f"sink_{'stage' if sink_stage else 'actor'}"))
    job.root.mkdir()
    create_outputs(job, plan.n_boxes, config.box)
    configure_data_context(config.object_store_budget_gb, config.io_retries)
    ds = build_dataset(plan.work_units(), config, str(checkpoint), job, "off", 0.0,
                       actor=PredictOnly if sink_stage else InferenceActor)
    if sink_stage:
        classes = load_checkpoint(checkpoint)["classes"]
        ds = ds.map_batches(write_stage, batch_size=1,
                            fn_kwargs={"job": str(job.root), "classes": classes})
    start = time.perf_counter()
    n = sum(int(np.sum(b["n"])) for b in unit_results(ds))
    assert n == plan.n_particles and len(job.finished_units()) == len(plan.units)
    return n / (time.perf_counter() - start)


def inputs(work: Path, particles: int) -> tuple[Path, Path, Path, np.ndarray]:
    """A random 200×512×512 tomogram (MRC and OME-Zarr) and a table of random centres."""
    shape = (200, 512, 512)
    volume = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    mrc = write_volume(work / "tomo.mrc", volume, 10.0)
    del volume
    store = convert_mrc_to_ome_zarr(mrc, work / "tomo.zarr", ConvertConfig(levels=1),
                                    progress=False)
    centres = np.random.default_rng(2).uniform(20, np.asarray(shape) - 21, size=(particles, 3))
    return mrc, store, write_csv(make_particles(centres, "tomo", 10.0), work / "tomo.csv"), centres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--particles", type=int, default=3000)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--naive-cap", type=int, default=100)
    args = parser.parse_args()
    checkpoint = resolve_model(args.checkpoint)
    work = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        mrc, store, table, centres = inputs(work, args.particles)
        eager_rate, precision, _ = model_only(checkpoint, args.batch, args.threads, "off")
        print(f"model-only eager: {eager_rate:.1f}/s ({precision}, batch {args.batch})")
        model_rate, _, compile_s = model_only(checkpoint, args.batch, args.threads, "on")
        print(f"model-only compiled: {model_rate:.1f}/s (compile {compile_s:.1f} s)")
        naive_rate = naive(checkpoint, mrc, centres[:args.naive_cap], args.threads)
        print(f"naive loop: {naive_rate:.1f}/s")
        config = RunConfig(tomograms=[str(store)], particles=[str(table)],
                           output=str(work / "job"), model=str(checkpoint),
                           batch_size=args.batch, threads_per_actor=args.threads,
                           compile="on", write_maps=False, discover=None)
        with TreeMemory() as memory:
            summary = run_job(config)
        e2e, stage = summary["end_to_end_per_s"], summary["particles_per_s"]
        print(f"end-to-end: {e2e:.1f}/s over the whole job, {stage:.1f}/s in the inference stage")
        plan = JobPlan.load(JobFolder(config.output).plan)
        config = config.model_copy(update={"box": 40})
        sinks = {"actor": inference_stage(config, plan, checkpoint, sink_stage=False),
                 "stage": inference_stage(config, plan, checkpoint, sink_stage=True)}
        print(f"inference stage, eager: {sinks['actor']:.1f}/s with the actor as writer, "
              f"{sinks['stage']:.1f}/s with a write stage")
        emit({
            "particles": args.particles, "threads": args.threads, "batch": args.batch,
            "precision": precision, "model_only_per_s": model_rate,
            "model_only_eager_per_s": eager_rate, "compile_over_eager": model_rate / eager_rate,
            "compile_s": compile_s, "end_to_end_per_s": e2e,
            "inference_stage_per_s": stage, "naive_per_s": naive_rate,
            "e2e_over_model": e2e / model_rate, "stage_over_model": stage / model_rate,
            "e2e_over_naive": e2e / naive_rate, "peak_rss_gb": memory.peak_rss / 1e9,
            "peak_pss_gb": memory.peak_pss / 1e9,
            "sink_in_actor_per_s": sinks["actor"], "sink_as_stage_per_s": sinks["stage"],
            "sink_in_actor_over_stage": sinks["actor"] / sinks["stage"],
            "timings_s": summary["timings_s"], "actor_time_s": summary["actor_time_s"],
        })
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
