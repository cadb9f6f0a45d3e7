"""The demo job: a small synthetic tomogram through convert → pick → extract, end to end.

Run by ``make demo``. Writes everything, and a ``summary.json``, into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dsmscale.convert import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.extract import extract_unit, plan_extraction
from dsmscale.io.mrc import write_volume
from dsmscale.io.omezarr import open_tomogram
from dsmscale.io.particles import write_particles
from dsmscale.io.subtomograms import write_subtomograms
from dsmscale.metrics import match_points
from dsmscale.pick import PickConfig, pick_particles
from dsmscale.simulate.blobs import blob_tomogram, random_separated_centres

VOXEL_A = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    shape = (128, 256, 256)
    truth = random_separated_centres(shape, 150, min_distance=16, margin=4, rng=rng)
    volume = blob_tomogram(shape, truth, sigma_px=3.0, amplitude=-1.0, noise_std=0.3, seed=args.seed)
    mrc = write_volume(out / "tomogram.mrc", volume, VOXEL_A)
    timings["simulate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    store = convert_mrc_to_ome_zarr(mrc, out / "tomogram.zarr", ConvertConfig(overwrite=True))
    timings["convert_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    picks = pick_particles(store, PickConfig(sigma_nm=2.5, min_distance_nm=8.0, threshold=4.0))
    write_particles(picks, out / "picks.star")
    scores = match_points(picks.df[["z", "y", "x"]].to_numpy(), truth, radius=3.0)
    timings["pick_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tomo = open_tomogram(store)
    plan = plan_extraction(tomo, picks, box=40, edge="pad")
    batches = (b for unit in plan.units for b in extract_unit(tomo, unit, 40, 64, normalise=True))
    write_subtomograms(batches, plan.n_particles, 40, out / "subtomograms",
                       {"tomogram": str(store), "voxel_size_a": VOXEL_A}, overwrite=True)
    timings["extract_s"] = time.perf_counter() - t0

    summary = {"tomogram_shape_zyx": list(shape), "voxel_size_a": VOXEL_A,
               "true_particles": len(truth), "picked": len(picks),
               "pick_precision": scores["precision"], "pick_recall": scores["recall"],
               "subtomograms": plan.n_particles, "box": 40,
               **{k: round(v, 2) for k, v in timings.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"outputs in {out.resolve()}: tomogram.mrc, tomogram.zarr, picks.star, subtomograms/, "
          "summary.json")


if __name__ == "__main__":
    main()
