"""One optimiser step: micro-batches with accumulated gradients, in the configured precision and
memory format, optionally distilling from a teacher."""

from __future__ import annotations

import torch

from dsmscale.training.losses import distill_terms, loss_terms


class TrainStep:
    """One optimisation step with the configured precision and memory format."""

    def __init__(self, model: torch.nn.Module, precision: str = "bf16", channels_last: bool = True,
                 lr: float = 1e-3, betas=(0.9, 0.99), weights=(1.0, 10.0, 1.0),
                 compile_model: bool = False, device: torch.device | None = None,
                 teacher: torch.nn.Module | None = None, distill_loss: str = "mse",
                 temperature: float = 4.0, hard_weight: float = 0.5, micro_batch: int | None = None,
                 wrap=None):
        self.micro_batch = micro_batch
        self.device = device or torch.device("cpu")
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        # what runs the model: compiled, or wrapped (Ray Train's DistributedDataParallel)
        self.forward = (torch.compile(self.model) if compile_model
                        else wrap(self.model) if wrap else self.model)
        self.autocast = precision == "bf16"
        self.weights = weights
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
        self.teacher = None if teacher is None else teacher.eval().to(
            self.device, memory_format=self.memory_format)
        self.distill = {"loss": distill_loss, "temperature": temperature}
        self.hard_weight = hard_weight

    def prepare(self, x: torch.Tensor, target: dict[str, torch.Tensor]):
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x, {k: v.to(self.device, non_blocking=True) for k, v in target.items()}

    def run(self, x: torch.Tensor, net: torch.nn.Module | None = None):
        """``net`` (default: the trained model) on ``x`` under the configured precision."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return (net or self.forward)(x)

    def __call__(self, x: torch.Tensor, target: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step over the batch ``x``, run in micro-batches of ``micro_batch`` boxes
        (all of it at once when None); returns the batch's mean loss terms. Without a teacher
        the means are exact whatever the micro-batches (`batch_counts`); with one, each
        micro-batch's means are weighted by its share of the boxes."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        size = self.micro_batch or len(x)
        counts = batch_counts(target) if self.teacher is None else None
        sums: dict[str, float] = {}
        for start in range(0, len(x), size):
            part = slice(start, start + size)
            terms = self._loss(*self.prepare(x[part], {k: v[part] for k, v in target.items()}),
                               counts)
            share = 1.0 if counts else len(x[part]) / len(x)
            (terms["total"] * share).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * share
        self.optimizer.step()
        if counts and counts["scale"] > 1:  # each worker holds its rows' share of the means
            shares = torch.tensor([v / counts["scale"] for v in sums.values()])
            torch.distributed.all_reduce(shares)
            return dict(zip(sums, shares.tolist(), strict=True))
        return sums

    def _loss(self, x: torch.Tensor, target: dict[str, torch.Tensor],
              counts: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        out = self.run(x)
        terms = loss_terms(out, target, self.weights, counts)
        if self.teacher is not None:
            with torch.no_grad():
                taught = self.run(x, self.teacher)
            soft = distill_terms(out, taught, self.weights, **self.distill)
            h = self.hard_weight
            terms = {k: h * terms[k] + (1 - h) * soft[k] for k in terms}
        return terms


def batch_counts(target: dict[str, torch.Tensor]) -> dict[str, float]:
    """Boxes of a batch with a learnt label and with known targets, summed over the Ray Train
    workers when there are several (whose gradients DDP averages: ``scale`` = workers makes the
    average the whole batch's mean)."""
    known = target.get("has_targets")
    values = torch.tensor([float((target["label"] >= 0).sum()),
                           float(len(target["label"]) if known is None else known.sum())])
    scale = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(values)
        scale = torch.distributed.get_world_size()
    labelled, known_n = (max(float(v), 1.0) / scale for v in values)
    return {"labelled": labelled, "known": known_n, "scale": scale}
