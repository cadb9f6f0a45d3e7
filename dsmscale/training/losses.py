"""The training loss: weighted terms of the active heads, and the distillation terms against a
teacher's outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_terms(out: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                  weights: tuple[float, float, float], loss: str = "mse",
                  temperature: float = 4.0) -> dict[str, torch.Tensor]:
    """Weighted distillation terms against the teacher's outputs, and their sum under ``total``:
    logits by MSE (Guo et al. 2018) or T²-scaled KL of the softened distributions, segmentation
    by cross-entropy with the teacher's soft voxel probabilities, recovery by MSE."""
    terms = {}
    if "logits" in out:
        s, t = out["logits"].float(), teacher["logits"].float()
        terms["cls"] = weights[0] * (F.mse_loss(s, t) if loss == "mse" else temperature**2 * F.kl_div(
            F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1),
            log_target=True, reduction="batchmean"))
    if "seg" in out:
        soft = torch.softmax(teacher["seg"].float(), 1)
        terms["seg"] = weights[1] * -(soft * F.log_softmax(out["seg"].float(), 1)).sum(1).mean()
    if "rec" in out:
        terms["rec"] = weights[2] * F.mse_loss(out["rec"].float(), teacher["rec"].float())
    terms["total"] = sum(terms.values())
    return terms


def loss_terms(out: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
               weights: tuple[float, float, float]) -> dict[str, torch.Tensor]:
    """Weighted loss terms of the active heads and their sum under ``total``."""
    terms = {}
    if "logits" in out:
        terms["cls"] = weights[0] * F.cross_entropy(out["logits"].float(), target["label"])
    if "seg" in out:
        terms["seg"] = weights[1] * F.cross_entropy(out["seg"].float(), target["mask"])
    if "rec" in out:
        terms["rec"] = weights[2] * F.mse_loss(out["rec"].float(), target["density"])
    terms["total"] = sum(terms.values())
    return terms


