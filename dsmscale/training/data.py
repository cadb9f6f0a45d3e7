"""A dataset split as tensors for training (`dsmscale.io.dataset.load_split` read it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dsmscale.io.dataset import load_split


@dataclass
class TrainingData:
    """One split in memory as tensors: x (n, 1, B, B, B) normalised boxes, label (n,) int64,
    mask (n, B, B, B) int64 (0 background, 1 target), density (n, 1, B, B, B) scaled,
    has_targets (n,) bool (mask and density known), and the table's rows."""

    x: torch.Tensor
    label: torch.Tensor
    mask: torch.Tensor
    density: torch.Tensor
    has_targets: torch.Tensor
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.label)

    def batch(self, idx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.x[idx], {"label": self.label[idx], "mask": self.mask[idx],
                             "density": self.density[idx], "has_targets": self.has_targets[idx]}


def load_training_data(dataset: str | os.PathLike, split: str, classes: list[str],
                       limit: int | None = None) -> TrainingData:
    """The rows of ``split`` as tensors (a seeded random subset of ``limit`` rows if given)."""
    rows = load_split(dataset, split, classes, limit)
    return TrainingData(x=torch.from_numpy(rows.boxes[:, None]),
                        label=torch.from_numpy(rows.labels),
                        mask=torch.from_numpy(rows.masks.astype(np.int64)),
                        density=torch.from_numpy(rows.densities[:, None]),
                        has_targets=torch.from_numpy(rows.has_targets), table=rows.table)
