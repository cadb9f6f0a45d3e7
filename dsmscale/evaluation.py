"""``dsmscale evaluate``: a checkpoint on a dataset split — the paper's metrics and figures.

Object accuracy, pixel accuracy and mIoU over {background, target}, per-class F1 and a confusion
matrix, FSC of recovered vs true target density (mean curve over particles; resolution in nm at
0.5), and Fig. 3-style slices (input, truth, segmentation, recovered density). The boxes go
through `dsmscale.inference.Predictor`, the code ``dsmscale run`` predicts with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score

from dsmscale.errors import InputError
from dsmscale.hardware import configure_threads
from dsmscale.inference import Predictor
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.dataset import (
    Split,
    check_grid,
    class_labels,
    dataset_grid,
    load_rows,
    split_rows,
)
from dsmscale.metrics import fsc_curve, fsc_resolution, segmentation_counts, segmentation_scores

#: Boxes per forward pass.
BATCH_SIZE = 64
#: Boxes read into memory at a time (about 0.6 GB of boxes, masks and densities at 40³).
BLOCK = 1024
#: Particles shown in the slices figure.
EXAMPLES = 6


class Scores:
    """What evaluation accumulates batch by batch: predicted classes, segmentation counts per
    box, the sum of FSC curves, and the first batch's examples for the slices figure."""

    def __init__(self):
        self.predicted: list[np.ndarray] = []
        self.box_counts: list[np.ndarray] = []  # (n, 2, 3) per batch; zeros without targets
        self.fsc_sum: np.ndarray | None = None
        self.n_fsc = 0
        self.examples: dict[str, np.ndarray] = {}

    def add(self, data: Split, rows: slice, out: dict[str, np.ndarray]) -> None:
        if "probabilities" in out:
            self.predicted.append(out["probabilities"].argmax(1))
        known = data.has_targets[rows]  # boxes whose mask and density are known
        if "seg" in out:
            counts = np.zeros((len(known), 2, 3), np.int64)
            for i in np.flatnonzero(known):
                counts[i] = segmentation_counts(out["seg"][i], data.masks[rows][i])
            self.box_counts.append(counts)
        if "rec" in out and known.any():
            curves = fsc_curve(out["rec"][known], data.densities[rows][known])  # one per box
            self.fsc_sum = curves.sum(0) + (0 if self.fsc_sum is None else self.fsc_sum)
            self.n_fsc += len(curves)
        if not self.examples:
            self.examples = {"x": data.boxes[rows][:EXAMPLES], "mask": data.masks[rows][:EXAMPLES],
                             "density": data.densities[rows][:EXAMPLES],
                             **{k: v[:EXAMPLES] for k, v in out.items() if k in ("seg", "rec")}}

    def metrics(self, labels: np.ndarray, classes: list[str], box: int,
                voxel_size_a: float) -> dict:
        metrics: dict = {}
        if self.predicted:
            pred, known = np.concatenate(self.predicted), labels >= 0
            metrics["obj_acc"] = float((pred[known] == labels[known]).mean())
            metrics["f1_per_class"] = dict(zip(classes, f1_score(
                labels[known], pred[known], labels=range(len(classes)), average=None,
                zero_division=0).tolist(), strict=True))
            metrics["confusion"] = confusion_matrix(labels[known], pred[known],
                                                    labels=range(len(classes))).tolist()
        if self.box_counts and np.concatenate(self.box_counts).any():
            metrics.update(segmentation_scores(np.concatenate(self.box_counts).sum(0)))
        if self.n_fsc:
            mean_curve = self.fsc_sum / self.n_fsc
            metrics["fsc_curve"] = mean_curve.tolist()
            metrics["fsc_resolution_nm"] = fsc_resolution(mean_curve, box, voxel_size_a / 10)
        return metrics

    def save_per_box(self, path: Path, index: np.ndarray, labels: np.ndarray) -> None:
        """Per box, for paired tests of two models on the same boxes (`dsmscale.statistics`):
        its dataset ``index``, true ``label`` (−1: unknown), ``predicted`` class (when the
        model classifies) and segmentation ``counts`` (n, 2, 3; zeros without targets)."""
        arrays = {"index": index, "label": labels}
        if self.predicted:
            arrays["predicted"] = np.concatenate(self.predicted)
        if self.box_counts:
            arrays["counts"] = np.concatenate(self.box_counts)
        with open(path, "wb") as f:  # a file object: np.savez_compressed would add ".npz" to the name
            np.savez_compressed(f, **arrays)

    def group_metrics(self, labels: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
        """Object accuracy (boxes of known class) and mIoU (boxes with targets) per value of
        ``groups`` (one per box, e.g. its tomogram)."""
        pred = np.concatenate(self.predicted) if self.predicted else None
        counts = np.concatenate(self.box_counts) if self.box_counts else None
        out = {}
        for value in np.unique(groups):
            rows = groups == value
            entry: dict = {"n": int(rows.sum())}
            if pred is not None and (known := rows & (labels >= 0)).any():
                entry["obj_acc"] = float((pred[known] == labels[known]).mean())
            if counts is not None and counts[rows].any():
                entry["miou"] = segmentation_scores(counts[rows].sum(0))["miou"]
            out[str(value)] = entry
        return out


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str | os.PathLike,
                        split: str | list[str] = "test",
                        output: str | os.PathLike | None = None, threads: int | None = None,
                        by: str | None = None) -> dict:
    """Evaluate a checkpoint on ``split`` (on the CPU, in the precision it supports); write
    metrics.json and figures to ``output``. FSC resolutions are in nm, from the dataset's voxel
    size; per-box results go to ``output/per_box.npz`` (`Scores.save_per_box`). ``by`` names a
    column of the dataset's table (e.g. ``tomogram``): the metrics are also
    given per value of it, as ``metrics["by"][value]``."""
    configure_threads(threads)
    predictor = Predictor(checkpoint, batch_size=BATCH_SIZE, device=torch.device("cpu"))
    check_grid(dataset, predictor.box, predictor.voxel_size_a, checkpoint)
    voxel_size_a = dataset_grid(dataset)[1]
    rows = split_rows(dataset, split)
    if by is not None and by not in rows.columns:
        raise InputError(dataset, f"the dataset's table has no column {by!r} to group by")
    labels = class_labels(rows, predictor.classes)
    scores = Scores()
    for block in range(0, len(rows), BLOCK):  # memory: one block, whatever the split's size
        data = load_rows(dataset, rows.iloc[block:block + BLOCK], predictor.classes,
                         density_scale=1.0)  # Da per voxel
        for start in range(0, len(data), BATCH_SIZE):
            batch = slice(start, min(start + BATCH_SIZE, len(data)))
            scores.add(data, batch, predictor(data.boxes[batch]))
    metrics = {"checkpoint": str(checkpoint), "dataset": str(dataset), "split": split,
               "n": len(rows), "model": predictor.name,
               **scores.metrics(labels, predictor.classes, predictor.box, voxel_size_a)}
    if by is not None:
        metrics["by"] = scores.group_metrics(labels, rows[by].to_numpy())
    if output is not None:
        _write(Path(output), metrics, predictor.classes, scores.examples)
        write_file_atomic(Path(output) / "per_box.npz", lambda tmp: scores.save_per_box(
            tmp, rows["index"].to_numpy(), labels))
    return metrics


def _write(out: Path, metrics: dict, classes: list[str], examples: dict[str, np.ndarray]) -> None:
    """metrics.json, the confusion matrix and the slices figure."""
    from dsmscale.report.evaluation import confusion_figure, slices_figure

    out.mkdir(parents=True, exist_ok=True)
    write_file_atomic(out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics,
                                                                                  indent=2)))
    if "confusion" in metrics:
        confusion_figure(np.asarray(metrics["confusion"]), classes, out / "confusion.png")
    slices_figure(examples, out / "slices.png")
