"""The paper's discovery experiment: a complex never seen in training found as its own cluster.

Usage: python jobs/discover_unseen.py --workdir data/discovery [--heldout 4V94] [--epochs 12]

1. Simulate dataset A (seed 0, SNR 0.06, the standard 22 classes) with ``--heldout`` kept out of
   the splits (``holdout_classes``): the model never sees it.
2. Train DSM-Net on the remaining 21 classes (one-cycle, ``--epochs``; cached by run hash and
   resumable, `dsmscale.training.runs`).
3. Run the real job over every subtomogram of A, held-out class included, and the reduce stage
   (streamed k-means, k = 22) with the true classes for scoring.
4. The cluster holding most held-out particles: its recall and purity
   (`dsmscale.metrics.cluster_recall_purity`), ARI and NMI of the whole clustering.
5. That cluster's recovered densities averaged three ways — the plain mean (no alignment: a
   rotational blur), brought upright with the simulator's true orientations (oracle alignment,
   `dsmscale.averaging.average_recovered`) and aligned de novo, without a reference or the
   orientations (`dsmscale.averaging.average_recovered_reference_free`, timed; its frame is
   arbitrary, so it is fitted onto the truth once, one rotation and shift, before the FSC) — and
   the FSC of each against the true held-out density
   (`dsmscale.simulation.tomogram.reference_box`).
Writes results/discovery.md (figures in results/discovery/) and results/discovery.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import dsmscale
from dsmscale.averaging import (
    align_to_reference,
    average_recovered,
    average_recovered_reference_free,
    to_reference_frame,
)
from dsmscale.discovery import cluster_members
from dsmscale.io.dataset import read_dataset_table
from dsmscale.io.job import JobFolder, read_parts
from dsmscale.io.particles import write_star
from dsmscale.metrics import cluster_recall_purity
from dsmscale.report.discovery import averages_fsc_figure, unseen_complex_report
from dsmscale.report.provenance import git_commit
from dsmscale.simulation.tomogram import TomogramConfig, reference_box
from dsmscale.training.runs import history, in_workdir, trained_checkpoint

RESULTS = Path(__file__).resolve().parents[1] / "results"
VOXEL_A = TomogramConfig().voxel_size_a  # the simulated grid this experiment runs on (Å)


def simulate(workdir: Path, heldout: str, seed: int) -> Path:
    data = workdir / "sim"
    if not (data / "summary.json").is_file():
        dsmscale.simulate(dsmscale.SimulateConfig(datasets={"A": 0.06}, holdout_classes=(heldout,),
                                                  seed=seed, figures=False), data, overwrite=True)
    return data


def run_all(data: Path, workdir: Path, checkpoint: Path) -> tuple[JobFolder, object]:
    """The job over every subtomogram of A; returns the job folder and the truth table."""
    table = dsmscale.read_particles(data / "truth" / "tomo_000.star")
    ids = read_dataset_table(data / "datasets" / "A")["particle_id"]
    truth = dataclasses.replace(table, df=table.df[table.df["particle_id"].isin(ids)]
                                .reset_index(drop=True))
    star = write_star(truth, workdir / "tomo_000_A.star")
    job = JobFolder(workdir / "job")
    shutil.rmtree(job.discovery, ignore_errors=True)
    dsmscale.run(dsmscale.RunConfig(
        tomograms=[str(data / "tomograms" / "tomo_000_A.mrc")], particles=[str(star)],
        output=str(job.root), model=str(checkpoint), write_maps=False, discover=None))
    return job, truth.df


def de_novo_average(job: JobFolder, members, truth_map: np.ndarray) -> tuple[np.ndarray, dict]:
    """The members' reference-free average, fitted onto ``truth_map`` (its own frame is
    arbitrary), and the alignment's wall time and mean correlation per round."""
    start = time.perf_counter()
    result = average_recovered_reference_free(job, members)
    seconds = time.perf_counter() - start
    fit = align_to_reference(result.average[None], truth_map)
    fitted = to_reference_frame(result.average, fit.rotations[0],
                                fit.centres(truth_map.shape[0])[0])
    return fitted, {"de_novo_align_s": seconds, "de_novo_round_scores": result.round_scores,
                    "de_novo_members": len(members)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--heldout", default="4V94")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    data = simulate(args.workdir, args.heldout, args.seed)
    config = in_workdir(dsmscale.TrainConfig(
        dataset=str(data / "datasets" / "A"), output="unset", model="dsmnet",
        max_epochs=args.epochs, schedule="onecycle", seed=0, threads=args.threads), args.workdir)
    checkpoint = trained_checkpoint(config, progress=True)
    job, truth = run_all(data, args.workdir, checkpoint)
    summary = dsmscale.discover(job, dsmscale.DiscoverConfig(k=22),
                                truth=truth[["particle_id", "class_name"]])
    clusters = read_parts(job.clusters)
    found = cluster_recall_purity(clusters["cluster"], clusters["true_class"] == args.heldout)
    members = cluster_members(job, found["best_cluster"]).merge(
        truth[["particle_id", "rot", "tilt", "psi"]], on="particle_id")
    oracle, _ = average_recovered(job, members)
    unaligned = np.load(job.cluster_averages)[found["best_cluster"]]
    truth_map = reference_box(args.heldout, oracle.shape[0])
    de_novo, de_novo_run = de_novo_average(job, members, truth_map)
    figures = RESULTS / "discovery"
    figures.mkdir(parents=True, exist_ok=True)
    fsc = averages_fsc_figure(truth_map, {"unaligned": unaligned, "oracle-aligned": oracle,
                                          "de novo": de_novo}, VOXEL_A,
                              figures / "averages_fsc.png")
    shutil.copy(job.tsne, figures / "tsne.png")
    result = {
        "heldout_class": args.heldout, "best_cluster": found["best_cluster"],
        "cluster_size": found["cluster_size"],
        "enriched_clusters": {c: {"heldout": v["of_class"], "size": v["size"]}
                              for c, v in found["enriched_clusters"].items()},
        "enriched_recall": found["enriched_recall"], "enriched_purity": found["enriched_purity"],
        "heldout_total": found["total"], "heldout_recall": found["recall"],
        "heldout_purity": found["purity"],
        "fsc_resolution_nm": fsc["oracle-aligned"]["fsc_resolution_nm"],
        "fsc_sum": fsc["oracle-aligned"]["fsc_sum"],
        "fsc_unaligned_resolution_nm": fsc["unaligned"]["fsc_resolution_nm"],
        "fsc_unaligned_sum": fsc["unaligned"]["fsc_sum"],
        "fsc_de_novo_resolution_nm": fsc["de novo"]["fsc_resolution_nm"],
        "fsc_de_novo_sum": fsc["de novo"]["fsc_sum"], **de_novo_run, "fsc": fsc,
        "ari": summary["ari"], "nmi": summary["nmi"], "particles": summary["particles"],
        "k": summary["k"], "epochs": args.epochs, "checkpoint": str(checkpoint),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": git_commit(),
        "wall_s": time.perf_counter() - start,
        "train_s": sum(e["epoch_s"] for e in history(config)),
    }
    (RESULTS / "discovery.json").write_text(json.dumps(result, indent=2))
    top = clusters.loc[clusters["cluster"] == found["best_cluster"], "true_class"]
    (RESULTS / "discovery.md").write_text(unseen_complex_report(
        result, top.value_counts().head(5).to_dict()))
    print(json.dumps({k: v for k, v in result.items() if k != "fsc"}))


if __name__ == "__main__":
    main()
