"""Discovery figures: t-SNE of features, and each cluster's average density."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


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
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
