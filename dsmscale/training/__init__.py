"""``dsmscale train`` and ``dsmscale distill``: DSM-Net, its ablations, the baselines and the
compact students, trained on a dataset folder (`dsmscale.io.dataset`).

Modules: `config` (TrainConfig and the run identity), `data` (a split as tensors), `augment`
(wedge-preserving rotations), `losses`, `step` (one optimiser step in micro-batches),
`batchnorm` (precise BN), `loop` (epochs, validation, early stopping, checkpoints), `runs`
(runs cached by identity).
"""

from dsmscale.training.config import TrainConfig
from dsmscale.training.loop import train

__all__ = ["TrainConfig", "train"]
