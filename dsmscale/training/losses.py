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
               weights: tuple[float, float, float],
               counts: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Weighted loss terms of the active heads and their sum under ``total``. Classification
    is a mean over the boxes with a label the model learns (``label`` ≥ 0), segmentation and
    recovery over the boxes whose targets are known (``target["has_targets"]``; all when
    absent): a box of a class without a template teaches only its class. ``counts``
    (``labelled``, ``known``: those boxes in the whole batch a micro-batch belongs to, times
    ``scale``) turn the means into the micro-batch's share of the batch's means, so the
    micro-batches' terms add up to them."""
    counts = counts or {}
    terms = {}
    if "logits" in out:
        per_box = F.cross_entropy(out["logits"].float(), target["label"], ignore_index=-1,
                                  reduction="none")
        terms["cls"] = weights[0] * _known_mean(per_box, target["label"] >= 0,
                                                counts.get("labelled"))
    known = target.get("has_targets")
    if "seg" in out:
        per_box = F.cross_entropy(out["seg"].float(), target["mask"], reduction="none")
        terms["seg"] = weights[1] * _known_mean(per_box, known, counts.get("known"))
    if "rec" in out:
        per_box = F.mse_loss(out["rec"].float(), target["density"], reduction="none")
        terms["rec"] = weights[2] * _known_mean(per_box, known, counts.get("known"))
    terms["total"] = sum(terms.values())
    return terms


def _known_mean(per_item: torch.Tensor, known: torch.Tensor | None,
                count: float | None = None) -> torch.Tensor:
    """Sum of a per-box (or per-voxel, averaged per box) loss over the boxes with known
    targets, divided by ``count`` (default: their number here; 0, still in the graph, when
    there is none)."""
    per_box = per_item.flatten(1).mean(1) if per_item.dim() > 1 else per_item
    if known is None:
        known = torch.ones_like(per_box, dtype=torch.bool)
    total = (per_box * known).sum()
    return total / (count if count is not None else known.sum().clamp(min=1))
