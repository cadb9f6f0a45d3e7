"""The main job on an embedded default, end to end: simulate → convert → run DSM-Net → report.

Run by ``make demo`` (``jobs/demo.py``). Simulates a crowded 150×256×256 tomogram at 1 nm from the shipped PDB
structures as dataset A is made (same crowding per volume, tilt series ±60° in 2° steps, CTF, MTF,
SNR 0.06), writes it as MRC with its ground truth, then runs the real job (`dsmscale run`:
OME-Zarr conversion, work units, Ray Data extraction tasks and a DSM-Net actor on an embedded
local Ray) with the shipped model on the true particle positions, and the DoG picker for
comparison. Scores the predictions against the truth — separately for boxes fully inside the
volume (as in training) and boxes padded at its edges — and writes ``report.md``, figures and
``summary.json`` into ``--output``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

import dsmscale
from dsmscale.io.mrc import write_volume
from dsmscale.io.particles import write_star
from dsmscale.metrics import match_points
from dsmscale.simulation.dataset import truth_table
from dsmscale.simulation.figures import tomogram_figure
from dsmscale.simulation.tomogram import TomogramConfig, simulate_tomogram

DEMO_TOMOGRAM = TomogramConfig(shape_zyx=(150, 256, 256), copies_per_class=20)
DEMO_SNR = 0.06


def simulate(out: Path, seed: int) -> tuple[Path, Path, np.ndarray, float]:
    sim = simulate_tomogram(DEMO_TOMOGRAM, seed=seed)
    noisy, snr = sim.noisy(DEMO_SNR)
    mrc = write_volume(out / "demo.mrc", noisy, DEMO_TOMOGRAM.voxel_size_a)
    tomogram_figure({"noisy": noisy, "noise-free": sim.noise_free, "density": sim.density},
                    out / "tomogram_slices.png")
    truth = truth_table(sim, "demo", 0)
    star = write_star(truth, out / "demo.star")
    return mrc, star, sim.placement.radii, snr


def report(out: Path, summary: dict) -> Path:
    lines = [
        "# dsmscale demo report", "",
        f"Simulated tomogram {summary['tomogram_shape_zyx']} at {summary['voxel_size_a']:g} Å, "
        f"SNR {summary['snr']:.3f}, {summary['true_particles']} molecules of 22 classes. "
        f"Model: `{summary['model']}`.", "",
        "| stage | result |", "|---|---|",
        f"| DSM-Net classification, boxes inside the volume | "
        f"{summary['class_accuracy_inside']:.1%} of {summary['classified_inside']} |",
        f"| DSM-Net classification, boxes padded at the volume's edges | "
        f"{summary['class_accuracy_padded']:.1%} of {summary['classified_padded']} |",
        f"| inference throughput | {summary['particles_per_s']:.1f} particles/s "
        f"({summary['end_to_end_per_s']:.1f}/s including Ray start-up) |",
        f"| DoG picker vs truth | precision {summary['pick_precision']:.2f}, recall "
        f"{summary['pick_recall']:.2f} |",
        f"| feature clustering (k = 22) vs truth | ARI {summary['discovery_ari']:.2f}, NMI "
        f"{summary['discovery_nmi']:.2f} |", "",
        "![slices](tomogram_slices.png)", "",
        "![t-SNE of DSM-Net features](job/discovery/tsne.png)", "",
        "![cluster averages](job/discovery/cluster_averages.png)", "",
        "Outputs: `job/particles.parquet/` (classes, probabilities, 1024-d features), "
        "`job/segmentation.zarr`, `job/density.zarr`, `job/maps/` (OME-Zarr label and density "
        "maps for napari), `job/demo_particles.star`, `job/copick/`.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(output: str | Path, model: str = "default", seed: int = 0) -> dict:
    """Simulate, run the job, score it against the truth and write the report into ``output``;
    returns the summary (also ``OUTPUT/summary.json``)."""
    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mrc, star, radii, snr = simulate(out, seed)
    simulate_s = time.perf_counter() - t0
    shutil.rmtree(out / "job", ignore_errors=True)  # a fresh simulation: a fresh job, not a resume
    job = dsmscale.run(dsmscale.RunConfig(tomograms=[str(mrc)], particles=[str(star)],
                                          output=str(out / "job"), model=model,
                                          batch_size=16, discover=None))
    folder = dsmscale.JobFolder(out / "job")
    results = folder.read_particles()
    truth = dsmscale.read_particles(star).df
    true = truth.set_index("particle_id")["class_name"]
    found = dsmscale.discover(folder, dsmscale.DiscoverConfig(k=22, tsne_sample=500),
                              truth=truth[["particle_id", "class_name"]])
    correct = results["class_name"].to_numpy() == true.loc[results["particle_id"]].to_numpy()
    padded = results["padded"].to_numpy()
    picks = dsmscale.pick(folder.converted("demo"),
                          dsmscale.PickConfig(sigma_nm=3.0, min_distance_nm=10.0, threshold=2.5))
    scores = match_points(picks.df[["z", "y", "x"]].to_numpy(), truth[["z", "y", "x"]].to_numpy(),
                          0.5 * radii.mean())
    summary = {"tomogram_shape_zyx": list(DEMO_TOMOGRAM.shape_zyx),
               "voxel_size_a": DEMO_TOMOGRAM.voxel_size_a, "snr": snr,
               "true_particles": len(true), "classified": len(results),
               "class_accuracy_inside": float(correct[~padded].mean()),
               "classified_inside": int((~padded).sum()),
               "class_accuracy_padded": float(correct[padded].mean()),
               "classified_padded": int(padded.sum()), "pick_precision": scores["precision"],
               "pick_recall": scores["recall"], "particles_per_s": job["particles_per_s"],
               "discovery_ari": found["ari"], "discovery_nmi": found["nmi"],
               "end_to_end_per_s": job["end_to_end_per_s"], "simulate_s": simulate_s,
               "job_timings_s": job["timings_s"], "model": job["model"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    report(out, summary)
    return summary


