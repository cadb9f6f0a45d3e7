"""Evaluation figures: confusion matrix, and the paper's Fig. 3-style slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsmscale.report.figures import plt, save_figure


def confusion_figure(confusion: np.ndarray, classes: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix (true class rows, predicted columns)."""
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.38 * len(classes) + 2, 0.38 * len(classes) + 1.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return save_figure(fig, path, dpi=100)


def slices_figure(examples: dict[str, np.ndarray], path: Path) -> Path:
    """Central xy slices per particle: input, true mask, predicted mask, true and recovered
    density (columns present only for the heads the model has); every example is a (B, B, B)
    volume."""
    columns = [("x", "input"), ("mask", "true mask"), ("seg", "segmentation"),
               ("density", "true density"), ("rec", "recovered")]
    columns = [(k, t) for k, t in columns if k in examples]
    n = len(examples["x"])
    fig, axes = plt.subplots(n, len(columns), figsize=(1.6 * len(columns), 1.6 * n), squeeze=False)
    for row in range(n):
        for col, (key, title) in enumerate(columns):
            vol = examples[key][row]
            axes[row, col].imshow(vol[vol.shape[0] // 2], cmap="gray")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(title, fontsize=8)
    return save_figure(fig, path, dpi=90)
