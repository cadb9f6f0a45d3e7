"""``dsmscale evaluate``: a checkpoint on a dataset split — the paper's metrics and figures.

Object accuracy, pixel accuracy and mIoU over {background, target}, per-class F1 and a confusion
matrix, FSC of recovered vs true target density (mean curve over particles; resolution in nm at
0.5), and Fig. 3-style slices (input, truth, segmentation, recovered density).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint
from dsmscale.data import check_model_fits, load_split
from dsmscale.hardware import configure_threads, resolve_precision
from dsmscale.io.atomic import write_file_atomic
from dsmscale.metrics import fsc_curve, fsc_resolution, segmentation_counts, segmentation_scores
from dsmscale.train import TrainStep


@torch.inference_mode()
def predict_split(step: TrainStep, data, batch_size: int = 64):
    """Yield (slice, model outputs as float32 numpy) over a split."""
    step.model.eval()
    for start in range(0, len(data), batch_size):
        sl = slice(start, min(start + batch_size, len(data)))
        x, _ = step.prepare(*data.batch(sl))
        out = step.run(x)
        yield sl, {k: v.float().cpu().numpy() for k, v in out.items()}


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str | os.PathLike,
                        split: str = "test", output: str | os.PathLike | None = None,
                        threads: int | None = None) -> dict:
    """Evaluate a checkpoint on ``split``; write metrics.json and figures to ``output``. FSC
    resolutions are in nm, from the dataset's voxel size."""
    configure_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    voxel_size_a = check_model_fits(ckpt, checkpoint, dataset)
    classes = ckpt["classes"]
    data = load_split(dataset, split, classes, density_scale=ckpt["normalisation"]["density_scale"])
    step = TrainStep(model, resolve_precision("auto", torch.device("cpu")), True)
    preds, counts, fsc_sum, n_fsc = [], np.zeros((2, 3), np.int64), None, 0
    examples = {}
    for sl, out in predict_split(step, data):
        if "logits" in out:
            preds.append(out["logits"].argmax(1))
        if "seg" in out:
            counts += segmentation_counts(out["seg"].argmax(1), data.mask[sl].numpy())
        if "rec" in out:
            for rec, true in zip(out["rec"][:, 0], data.density[sl, 0].numpy(), strict=True):
                curve = fsc_curve(rec, true)
                fsc_sum = curve if fsc_sum is None else fsc_sum + curve
                n_fsc += 1
        if not examples:
            examples = {"x": data.x[sl][:6, 0].numpy(), "mask": data.mask[sl][:6].numpy(),
                        "density": data.density[sl][:6, 0].numpy(),
                        **{k: v[:6] for k, v in out.items() if k in ("seg", "rec")}}
    metrics: dict = {"checkpoint": str(checkpoint), "dataset": str(dataset), "split": split,
                     "n": len(data), "model": ckpt["model"]}
    labels = data.label.numpy()
    if preds:
        pred = np.concatenate(preds)
        known = labels >= 0
        metrics["obj_acc"] = float((pred[known] == labels[known]).mean())
        metrics["f1_per_class"] = dict(zip(classes, f1_score(
            labels[known], pred[known], labels=range(len(classes)), average=None,
            zero_division=0).tolist(), strict=True))
        metrics["confusion"] = confusion_matrix(labels[known], pred[known],
                                                labels=range(len(classes))).tolist()
    if counts.any():
        metrics.update(segmentation_scores(counts))
    if n_fsc:
        mean_curve = fsc_sum / n_fsc
        metrics["fsc_curve"] = mean_curve.tolist()
        metrics["fsc_resolution_nm"] = fsc_resolution(mean_curve, data.x.shape[-1],
                                                      voxel_size_a / 10)
    if output is not None:
        from dsmscale.report.evaluation import confusion_figure, slices_figure

        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        write_file_atomic(out / "metrics.json",
                          lambda tmp: tmp.write_text(json.dumps(metrics, indent=2)))
        if "confusion" in metrics:
            confusion_figure(np.asarray(metrics["confusion"]), classes, out / "confusion.png")
        slices_figure(examples, out / "slices.png")
    return metrics
