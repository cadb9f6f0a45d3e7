"""Exact BatchNorm statistics ("precise BN") before each validation."""

from __future__ import annotations

import numpy as np
import torch

from dsmscale.training.data import StreamedData, TrainingData
from dsmscale.training.step import TrainStep


@torch.no_grad()
def recalibrate_batch_norm(step: TrainStep, data: TrainingData | StreamedData, n: int = 512,
                           batch_size: int = 64,
                           seed: int = 0) -> None:
    """Recompute BatchNorm running statistics exactly over ``n`` training boxes ("precise BN").

    Running averages lag far behind while weights move fast (one-cycle peak): eval-mode accuracy
    then collapses although train-mode accuracy is fine. Only BN layers run in train mode here,
    so dropout draws no random numbers and the training trajectory is unchanged.
    """
    norms = [m for m in step.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    step.model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    for x, _ in data.sampled(np.random.default_rng(seed), n, batch_size):
        x, _target = step.prepare(x, {})
        step.run(x)
    for m in norms:
        m.momentum = 0.1
    step.model.eval()
