"""``dsmscale train`` and ``dsmscale distill``: DSM-Net, its ablations, the baselines and the
compact students, trained on a dataset folder (`dsmscale.io.dataset`).

Modules: `config` (TrainConfig and the run identity), `data` (a split as tensors), `augment`
(wedge-preserving rotations), `losses`, `step` (one optimiser step in micro-batches),
`batchnorm` (precise BN), `loop` (epochs, validation, early stopping, checkpoints), `init`
(fine-tuning from a checkpoint), `distributed` (the loop on Ray Train workers), `runs` (runs
cached by identity).
"""

from dsmscale.training.config import TrainConfig
from dsmscale.training.loop import train as train_here

__all__ = ["TrainConfig", "train"]


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) a run: in this process, or with ``config.workers`` > 1 on Ray Train
    (`dsmscale.training.distributed`)."""
    if config.workers > 1:
        from dsmscale.training.distributed import train_on_ray

        return train_on_ray(config)
    return train_here(config, progress)
