"""Benchmark: the inference job end to end vs the model alone vs a naive loop, in one run.

Usage: python jobs/bench_pipeline.py [--particles 3000] [--checkpoint CKPT] [--threads 2]

- model-only: `Predictor.predict` (the actor's own code: same model, threads, precision,
  channels_last_3d, batch size) on in-memory batches, eager and torch.compile'd (with the
  one-off compile time; a second compile in the same machine reuses Inductor's on-disk cache);
- end-to-end: `run_job` (compile on) on an OME-Zarr tomogram with a particle table (embedded Ray,
  one actor; the discovery reduce stage is off — `jobs/bench_discover.py` times it),
  rate over the whole job wall time and over the inference stage;
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
from _bench import TreeMemory, boxes_per_second, emit

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint
from dsmscale.convert import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.extract import box_starts
from dsmscale.hardware import configure_threads
from dsmscale.infer.config import RunConfig
from dsmscale.infer.pipeline import run_job
from dsmscale.io.mrc import write_volume
from dsmscale.io.particles import make_particles, write_csv
from dsmscale.weights import resolve_model


def model_only(checkpoint: Path, out: Path, batch: int, threads: int, compile: str,
               seconds: float = 20.0) -> tuple[float, str, float]:
    """Subtomograms/s of the actor's own predict on in-memory batches; precision, compile s."""
    from dsmscale.infer.predictor import Predictor

    out.mkdir(parents=True, exist_ok=True)
    import zarr

    for name in ("segmentation", "density"):
        zarr.create_array(str(out / f"{name}.zarr"), shape=(64, 40, 40, 40), chunks=(64, 40, 40, 40),
                          dtype="uint8" if name == "segmentation" else "float32", overwrite=True)
    predictor = Predictor(str(checkpoint), str(out), batch, threads, compile=compile)
    rate = boxes_per_second(predictor.predict, batch, seconds)
    return rate, predictor.precision, predictor.model.compile_s


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
        shape = (200, 512, 512)
        volume = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        mrc = write_volume(work / "tomo.mrc", volume, 10.0)
        del volume
        store = convert_mrc_to_ome_zarr(mrc, work / "tomo.zarr", ConvertConfig(levels=1),
                                        progress=False)
        rng = np.random.default_rng(2)
        centres = rng.uniform(20, np.asarray(shape) - 21, size=(args.particles, 3))
        table = write_csv(make_particles(centres, "tomo", 10.0), work / "tomo.csv")
        eager_rate, precision, _ = model_only(checkpoint, work / "eager", args.batch,
                                              args.threads, "off")
        print(f"model-only eager: {eager_rate:.1f}/s ({precision}, batch {args.batch})")
        model_rate, _, compile_s = model_only(checkpoint, work / "compiled", args.batch,
                                              args.threads, "on")
        print(f"model-only compiled: {model_rate:.1f}/s (compile {compile_s:.1f} s)")
        naive_rate = naive(checkpoint, mrc, centres[:args.naive_cap], args.threads)
        print(f"naive loop: {naive_rate:.1f}/s")
        config = RunConfig(tomograms=[str(store)], particles=[str(table)],
                           output=str(work / "job"), model=str(checkpoint),
                           batch_size=args.batch, threads_per_actor=args.threads,
                           compile="on", write_maps=False, discover=None)
        with TreeMemory() as memory:
            summary = run_job(config)
        e2e = summary["end_to_end_per_s"]
        stage = summary["particles_per_s"]
        print(f"end-to-end: {e2e:.1f}/s over the whole job, {stage:.1f}/s in the inference stage")
        emit({
            "particles": args.particles, "threads": args.threads, "batch": args.batch,
            "precision": precision, "model_only_per_s": model_rate,
            "model_only_eager_per_s": eager_rate, "compile_over_eager": model_rate / eager_rate,
            "compile_s": compile_s, "end_to_end_per_s": e2e,
            "inference_stage_per_s": stage, "naive_per_s": naive_rate,
            "e2e_over_model": e2e / model_rate, "stage_over_model": stage / model_rate,
            "e2e_over_naive": e2e / naive_rate, "peak_rss_gb": memory.peak_rss / 1e9,
            "peak_pss_gb": memory.peak_pss / 1e9,
            "timings_s": summary["timings_s"], "actor_time_s": summary["actor_time_s"],
        })
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
