"""A checkpoint's network as a predictor: normalised boxes in, per-particle outputs out.

Pure computation: no Ray, no files but the checkpoint. ``dsmscale run``'s actors call it and hand
its outputs to a sink; ``dsmscale evaluate`` scores them against a dataset's truth, so
evaluation figures come from the code path users run.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint, model_grid
from dsmscale.inference.backend import CompileMode, InferenceModel


class Predictor:
    """Predicts, for (n, B, B, B) boxes normalised per box, the outputs of the heads the
    checkpoint's network has:

    - ``probabilities`` (n, C) float32 softmax over the checkpoint's ``classes`` and
      ``features`` (n, 1024) float32, the classifier's hidden layer (classification head);
    - ``seg`` (n, B, B, B) uint8 predicted target mask (segmentation head);
    - ``rec`` (n, B, B, B) float32 recovered density in Da per voxel (recovery head).
    """

    def __init__(self, checkpoint: str | os.PathLike, batch_size: int | Literal["auto"] = "auto",
                 compile: CompileMode = "off", precision: str = "auto",
                 device: torch.device | None = None):
        ckpt = load_checkpoint(checkpoint)
        self.name: str = ckpt["model"]
        self.classes: list[str] = list(ckpt["classes"])
        self.heads: tuple[str, ...] = tuple(ckpt["heads"])
        self.box, self.voxel_size_a = model_grid(ckpt)
        self.density_scale = float(ckpt["normalisation"]["density_scale"])
        self.model = InferenceModel(model_from_checkpoint(ckpt, checkpoint), batch_size,
                                    self.box, compile=compile, precision=precision,
                                    device=device)

    def describe(self) -> str:
        """The backend chosen, in one line (device, precision, batch size, compilation)."""
        m = self.model
        tuned = " (tuned)" if m.batch_rates else ""
        return (f"{m.device}, {m.precision}, batch {m.batch_size}{tuned}, compiled {m.compiled} "
                f"({m.compile_s:.1f} s)")

    def __call__(self, boxes: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model(boxes)
        result = {}
        if "logits" in out:
            result["probabilities"] = torch.softmax(out["logits"], 1).numpy()
            result["features"] = out["features"].numpy()
        if "seg" in out:
            result["seg"] = out["seg"].argmax(1).to(torch.uint8).numpy()
        if "rec" in out:
            result["rec"] = (out["rec"][:, 0] * self.density_scale).numpy()
        return result
