"""Benchmark: training memory on a split too large to load, streamed from its Zarr arrays.

Usage: python jobs/bench_stream.py --workdir DIR [--boxes 200000] [--train-every 50]

A synthetic dataset of ``--boxes`` 40³ boxes (a smooth pattern per box, so the arrays compress
and the disk holds them; the loader decodes every voxel all the same) is streamed through a whole
epoch by `dsmscale.training.data.StreamedData` as training reads it, a DSM-Net training step
taken on every ``--train-every``-th batch (all of them would take hours on a CPU); the peak RSS
of the process (its high-water mark) against what the split would take in memory. Last stdout
line: one JSON object.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dsmscale.io.dataset import TABLE, create_dataset_arrays
from dsmscale.models import build_model
from dsmscale.profiling import emit, peak_rss_gb
from dsmscale.training.data import BYTES_PER_VOXEL, load_training_data
from dsmscale.training.step import TrainStep

BOX, CLASSES = 40, ["a", "b", "c"]


def synthetic_dataset(folder: Path, n: int) -> Path:
    """``n`` boxes whose voxels are a per-box shifted ramp (compressible), 3 classes, all train."""
    if (folder / TABLE).is_file():
        return folder
    arrays = create_dataset_arrays(folder, BOX, 10.0)
    ramp = np.linspace(0, 1, BOX**3, dtype=np.float32).reshape((BOX,) * 3)
    for start in range(0, n, 1024):
        k = min(1024, n - start)
        boxes = np.stack([ramp + np.float32(i % 7) for i in range(start, start + k)])
        arrays["subtomograms"].append(boxes)
        arrays["mask"].append((boxes > 3).astype(np.uint8))
        arrays["density"].append(boxes)
    pd.DataFrame({"index": np.arange(n), "split": "train",
                  "class_name": np.array(CLASSES)[np.arange(n) % 3],
                  "class_index": np.arange(n) % 3}).to_parquet(folder / TABLE)
    return folder


def stream_epoch(data, step: TrainStep, batch_size: int, every: int) -> tuple[int, int]:
    """One shuffled epoch; a training step on every ``every``-th batch. (boxes, steps)."""
    boxes = steps = 0
    for b, (x, target) in enumerate(data.shuffled(np.random.default_rng(0), batch_size)):
        boxes += len(x)
        if b % every == 0:
            step(x, target)
            steps += 1
    return boxes, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--boxes", type=int, default=200_000)
    parser.add_argument("--train-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    start = time.perf_counter()
    dataset = synthetic_dataset(args.workdir / f"synthetic_{args.boxes}", args.boxes)
    built = time.perf_counter() - start
    torch.manual_seed(0)
    step = TrainStep(build_model("dsmnet", len(CLASSES)), micro_batch=8)
    data = load_training_data(dataset, "train", CLASSES, stream=True)
    t0 = time.perf_counter()
    boxes, steps = stream_epoch(data, step, args.batch_size, args.train_every)
    epoch_s = time.perf_counter() - t0
    peak = peak_rss_gb()  # the process's high-water mark, building the dataset included
    in_memory_gb = args.boxes * BOX**3 * BYTES_PER_VOXEL / 2**30
    print(f"{type(data).__name__}: {boxes} boxes in {epoch_s:.0f} s ({boxes / epoch_s:.0f}/s "
          f"read, {steps} training steps); peak RSS {peak:.2f} GB vs "
          f"{in_memory_gb:.0f} GB to hold the split")
    emit({"boxes": boxes, "loader": type(data).__name__, "training_steps": steps,
          "epoch_s": epoch_s, "boxes_per_s_read": boxes / epoch_s, "peak_rss_gb": peak,
          "in_memory_gb": in_memory_gb, "build_s": built})


if __name__ == "__main__":
    main()
