"""Discovery figures: t-SNE of features, each cluster's average density, and the unseen-complex
experiment's averages against the truth with its report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.report.figures import plt, save_figure


def tsne_figure(features: np.ndarray, labels: pd.DataFrame, path: Path, seed: int = 0) -> Path:
    """2D t-SNE of a feature sample, coloured by cluster and by (true or predicted) class."""
    from sklearn.manifold import TSNE

    xy = TSNE(n_components=2, random_state=seed, init="pca",
              perplexity=min(30, max(5, len(features) // 4))).fit_transform(features)
    by_class = labels["true_class"] if "true_class" in labels else labels["class_name"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, values, title in ((axes[0], labels["cluster"].astype(str), "k-means cluster"),
                              (axes[1], by_class.astype(str), "class")):
        codes, names = pd.factorize(values, sort=True)
        ax.scatter(xy[:, 0], xy[:, 1], c=codes, cmap="tab20", s=4)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(names) <= 24:
            for i, name in enumerate(names):
                centre = xy[codes == i].mean(0)
                ax.annotate(name, centre, fontsize=7, ha="center")
    return save_figure(fig, path, dpi=90)


def density_gallery(averages: np.ndarray, sizes: list[int], path: Path) -> Path:
    """Central xy and xz slices of every cluster's average recovered density."""
    k = len(averages)
    fig, axes = plt.subplots(2, k, figsize=(1.2 * k, 2.8), squeeze=False)
    for c, vol in enumerate(averages):
        mid = vol.shape[0] // 2
        axes[0, c].imshow(vol[mid], cmap="gray")
        axes[1, c].imshow(vol[:, mid], cmap="gray")
        axes[0, c].set_title(f"{c} (n={sizes[c]})", fontsize=6)
        for r in (0, 1):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    axes[0, 0].set_ylabel("xy", fontsize=7)
    axes[1, 0].set_ylabel("xz", fontsize=7)
    return save_figure(fig, path, dpi=100)


def averages_fsc_figure(reference: np.ndarray, averages: dict[str, np.ndarray],
                        voxel_size_a: float, path: Path) -> dict[str, dict]:
    """Central z slices of the true density and of each average, and each average's FSC
    against the truth; returns per average its FSC-0.5 resolution (nm), FSC sum and curve."""
    from dsmscale.metrics import fsc_curve, fsc_resolution

    box = reference.shape[0]
    scores = {}
    fig, axes = plt.subplots(1, 2 + len(averages), figsize=(4 * (2 + len(averages)), 4))
    axes[0].imshow(reference[box // 2], cmap="gray")
    axes[0].set_title("true density (central z slice)")
    for ax, (name, average) in zip(axes[1:], averages.items(), strict=False):
        ax.imshow(average[box // 2], cmap="gray")
        ax.set_title(f"{name} average")
    for name, average in averages.items():
        curve = fsc_curve(average, reference)
        scores[name] = {"fsc_resolution_nm": fsc_resolution(curve, box, voxel_size_a / 10),
                        "fsc_sum": float(np.sum(curve)), "fsc_curve": np.round(curve, 4).tolist()}
        axes[-1].plot(np.arange(len(curve)) / (box * voxel_size_a / 10), curve, label=name)
    axes[-1].axhline(0.5, color="k", lw=0.8, ls="--")
    axes[-1].set(xlabel="spatial frequency (1/nm)", ylabel="FSC", title="FSC vs true density")
    axes[-1].legend()
    for ax in axes[:-1]:
        ax.axis("off")
    save_figure(fig, path, dpi=110)
    return scores


def unseen_complex_report(result: dict, top_classes: dict[str, int]) -> str:
    """results/discovery.md: the held-out complex's cluster, its recall and purity, and its
    averages' FSC against the truth (``result`` as `jobs/discover_unseen.py` writes it;
    ``top_classes`` the true classes of its best cluster, most first)."""
    return "\n".join([
        "# Discovery of an unseen complex (the paper's GroEL experiment, with TRiC 4V94)", "",
        f"Command: `{result['command']}`  ",
        f"Commit: `{result['commit']}`; training {result['train_s'] / 60:.0f} min (cached and "
        f"resumed by config hash); this run {result['wall_s'] / 60:.0f} min in all (training "
        "included when it ran here), 2 CPU cores.  ",
        f"Data: dataset A (`dsmscale simulate`, seed 0, SNR 0.06), {result['particles']} "
        f"subtomograms of 22 classes; {result['heldout_class']} ({result['heldout_total']} "
        "particles) held out of training. DSM-Net trained on the other 21 classes for "
        f"{result['epochs']} epochs (one-cycle); k-means k = {result['k']} on the 1024-d features.",
        "", "| figure | ours | target (paper) |", "|---|---|---|",
        f"| recall of {result['heldout_class']} in its best cluster | "
        f"{result['heldout_recall']:.1%} | ≥ 90 % |",
        f"| purity of that cluster | {result['heldout_purity']:.1%} | ≥ 80 % |",
        f"| recall / purity over all clusters ≥ 80 % {result['heldout_class']} ("
        + ", ".join(f"{c}: {v['heldout']} of {v['size']}"
                    for c, v in result["enriched_clusters"].items())
        + f") | {result['enriched_recall']:.1%} / {result['enriched_purity']:.1%} | — |",
        f"| FSC 0.5 resolution, oracle-aligned average vs truth | "
        f"{result['fsc_resolution_nm']:.1f} nm (FSC sum {result['fsc_sum']:.2f}) | ≤ 5.0 nm |",
        f"| FSC 0.5 resolution, de novo (reference-free) average vs truth | "
        f"{result['fsc_de_novo_resolution_nm']:.1f} nm (FSC sum "
        f"{result['fsc_de_novo_sum']:.2f}; {result['de_novo_members']} members aligned in "
        f"{result['de_novo_align_s']:.0f} s) | ≤ 5.0 nm |",
        f"| FSC 0.5 resolution, unaligned average vs truth | "
        f"{result['fsc_unaligned_resolution_nm']:.1f} nm (FSC sum "
        f"{result['fsc_unaligned_sum']:.2f}) | — |",
        f"| ARI / NMI of the clustering vs the true classes | {result['ari']:.2f} / "
        f"{result['nmi']:.2f} | — |", "",
        f"Best cluster {result['best_cluster']} ({result['cluster_size']} particles), true "
        "classes: " + ", ".join(f"{c} {n}" for c, n in top_classes.items()) + ".", "",
        "k-means with k = 22 may split one complex over several clusters (the classifier, "
        "which never saw it, spreads its particles over the known classes it resembles); the row "
        "over all clusters at least 80 % held-out says how much of the class such clusters "
        "hold together. The target is stated for the best single cluster.", "",
        "The unaligned average is the plain mean of the cluster's recovered densities: particles "
        "lie in random orientations, so it is a rotational blur of the structure. The "
        "oracle-aligned average rotates each member's recovered density upright with the "
        "simulator's true orientation before averaging (members of other classes included): it "
        "measures what the recovery head gives for a never-seen structure, as subtomogram "
        "averaging with perfect alignment would. The de novo average is what a user can make, "
        "and what the reduce stage now shows per cluster: the members aligned to each other "
        "without a reference or their orientations (`dsmscale.averaging.reference_free_average`: "
        "global search on a 15° grid, local refinement and FFT shifts, 3 rounds; mean correlation "
        "with the average per round: "
        + ", ".join(f"{v:.3f}" for v in result["de_novo_round_scores"])
        + "). Its frame is arbitrary, so it is fitted onto the true density once (one rotation "
        "and shift) before its FSC.", "",
        "![t-SNE](discovery/tsne.png)", "", "![averages and FSC](discovery/averages_fsc.png)", ""])
