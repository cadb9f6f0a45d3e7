"""``dsmscale train --workers N``: the same training loop as data-parallel workers on Ray Train
(`ray.train.torch.TorchTrainer`: DistributedDataParallel, one worker per GPU with ``use_gpu``,
gloo between CPU workers), on the embedded local Ray, a Ray cluster or inside a Ray Job.

Every worker holds the same model; each optimiser step, worker ``r`` of ``N`` trains on rows
``r, r + N, …`` of the batch the single-process loop would take, and DDP averages the gradients,
so a step is the whole batch's (BatchNorm's statistics are per worker's micro-batch). BatchNorm
is recalibrated on the same boxes on every worker and every worker validates, so all take the
same early-stopping decision; worker 0 writes the run folder (``last.pt``, ``best.pt``,
``history.json``; resumable as a single-process run is) and reports each epoch's checkpoint to
Ray Train. The run folder must be on storage every worker sees (local Ray: any folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dsmscale.training.config import TrainConfig


def train_on_ray(config: TrainConfig) -> dict:
    """Train (or resume) ``config`` on ``config.workers`` Ray Train workers (Ray from
    ``RAY_ADDRESS``, else an embedded local one); returns what `dsmscale.training.loop.train`
    returns, read from the run folder worker 0 wrote. Paths are made absolute first: workers
    run in folders of Ray's own."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from dsmscale.io.dataset import dataset_classes
    from dsmscale.parallel import ensure_ray
    from dsmscale.training.loop import run_summary

    config = config.model_copy(update={k: str(Path(v).resolve()) for k, v in (
        ("dataset", config.dataset), ("output", config.output), ("init", config.init),
        ("teacher", config.teacher)) if v and Path(v).exists()})
    dataset_classes(config.dataset)  # a bad dataset in one line here, not from a worker
    ensure_ray(None)
    trainer = TorchTrainer(
        _worker, train_loop_config={"config": config.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=bool(config.use_gpu)),
        run_config=RunConfig(name="ray_train", storage_path=config.output,
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    trainer.fit()
    history = json.loads((Path(config.output) / "history.json").read_text())
    return run_summary(history, Path(config.output), config)


def _worker(loop_config: dict) -> None:
    """One Ray Train worker: the training loop on its share of every batch, with its share of
    the machine's cores (unless ``threads`` says otherwise)."""
    import ray.train
    import ray.train.torch
    import torch

    from dsmscale.training.loop import train

    context = ray.train.get_context()
    shard = (context.get_world_rank(), context.get_world_size())
    config = TrainConfig(**loop_config["config"])
    if config.threads is None:
        config = config.model_copy(update={"threads": max(1, (os.cpu_count() or 1)
                                                          // context.get_local_world_size())})
    device = ray.train.torch.get_device() if config.use_gpu else torch.device("cpu")
    train(config, progress=False, shard=shard, device=device,
          wrap=ray.train.torch.prepare_model, report=_report)


def _report(metrics: dict, checkpoint_dir: Path | None) -> None:
    """An epoch's metrics (and, from worker 0, its run folder's checkpoint) to Ray Train."""
    import ray.train

    checkpoint = None if checkpoint_dir is None else ray.train.Checkpoint.from_directory(
        str(checkpoint_dir))
    ray.train.report({k: v for k, v in metrics.items() if isinstance(v, int | float)},
                     checkpoint=checkpoint)
