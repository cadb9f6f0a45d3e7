"""The demo job: a small simulated tomogram through convert → pick → extract, end to end.

Run by ``make demo``. Simulates a crowded 100×256×256 tomogram at 1 nm from the shipped PDB
structures (tilt series ±60°, CTF, MTF, SNR 0.1), converts it to OME-Zarr, picks particles with
the DoG picker, scores the picks against the ground truth, extracts 40³ subtomograms and writes
everything, with ``summary.json``, into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dsmscale.convert import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.extract import extract_unit, plan_extraction
from dsmscale.io.mrc import write_volume
from dsmscale.io.omezarr import open_tomogram
from dsmscale.io.particles import write_particles
from dsmscale.io.subtomograms import write_subtomograms
from dsmscale.metrics import match_points
from dsmscale.pick import PickConfig, pick_particles
from dsmscale.simulate.figures import tomogram_figure
from dsmscale.simulate.tomogram import TomogramConfig, simulate_tomogram

DEMO_TOMOGRAM = TomogramConfig(shape_zyx=(100, 256, 256), copies_per_class=6, tilt_step_deg=3.0)
DEMO_SNR = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    t0 = time.perf_counter()
    sim = simulate_tomogram(DEMO_TOMOGRAM, seed=args.seed)
    noisy, snr = sim.noisy(DEMO_SNR)
    vs = DEMO_TOMOGRAM.voxel_size_a
    mrc = write_volume(out / "tomogram.mrc", noisy, vs)
    tomogram_figure({"noisy": noisy, "noise-free": sim.noise_free, "density": sim.density},
                    out / "tomogram_slices.png")
    truth = sim.placement.centres
    timings["simulate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    store = convert_mrc_to_ome_zarr(mrc, out / "tomogram.zarr", ConvertConfig(overwrite=True))
    timings["convert_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    picks = pick_particles(store, PickConfig(sigma_nm=3.0, min_distance_nm=10.0, threshold=2.5))
    write_particles(picks, out / "picks.star")
    radius = 0.5 * sim.placement.radii.mean()
    scores = match_points(picks.df[["z", "y", "x"]].to_numpy(), truth, radius=radius)
    timings["pick_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tomo = open_tomogram(store)
    plan = plan_extraction(tomo, picks, box=40, edge="pad")
    batches = (b for unit in plan.units for b in extract_unit(tomo, unit, 40, 64, normalise=True))
    write_subtomograms(batches, plan.n_particles, 40, out / "subtomograms",
                       {"tomogram": str(store), "voxel_size_a": vs}, overwrite=True)
    timings["extract_s"] = time.perf_counter() - t0

    summary = {"tomogram_shape_zyx": list(DEMO_TOMOGRAM.shape_zyx), "voxel_size_a": vs,
               "snr": snr, "true_particles": len(truth), "picked": len(picks),
               "pick_match_radius_px": radius,
               "pick_precision": scores["precision"], "pick_recall": scores["recall"],
               "subtomograms": plan.n_particles, "box": 40,
               **{k: round(v, 2) for k, v in timings.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"outputs in {out.resolve()}: tomogram.mrc, tomogram.zarr, tomogram_slices.png, "
          "picks.star, subtomograms/, summary.json")


if __name__ == "__main__":
    main()
