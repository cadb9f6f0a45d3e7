"""The training loop: epochs of optimiser steps, precise BatchNorm, validation, early stopping,
checkpoints every epoch, resumable from ``RUN/last.pt``.

Paper defaults (`dsmscale.training.config`): Adam (lr 1e-3, betas 0.9/0.99), batch 64, ≤ 100
epochs, early stopping after 15 epochs without a better monitored value. ``monitor`` picks what
early stopping and ``best.pt`` follow: the validation loss (the paper's procedure) or the
validation score, the mean of object accuracy and mIoU over the model's heads (with several heads
at low SNR the loss can rise while both scores still improve, as on dataset B).

A run folder holds ``config.yaml``, ``last.pt`` (every epoch), ``best.pt`` (each new best),
``history.json`` (read by other processes while training) and ``curves.png``; checkpoints follow
`dsmscale.checkpoints`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from dsmscale.checkpoints import (
    check_model_fits,
    load_checkpoint,
    model_from_checkpoint,
    network_entries,
    save_checkpoint,
)
from dsmscale.errors import InputError
from dsmscale.hardware import configure_threads, machine_name, resolve_precision
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.dataset import DENSITY_SCALE, dataset_classes, dataset_grid
from dsmscale.metrics import segmentation_counts, segmentation_scores
from dsmscale.models import build_model
from dsmscale.training.augment import WEDGE_ROTATIONS, rotate_boxes_180
from dsmscale.training.batchnorm import recalibrate_batch_norm
from dsmscale.training.config import TrainConfig
from dsmscale.training.data import StreamedData, TrainingData, load_training_data
from dsmscale.training.init import load_initial_weights, set_encoder_trainable
from dsmscale.training.losses import loss_terms
from dsmscale.training.step import TrainStep


@torch.inference_mode()
def validate(step: TrainStep, data: TrainingData | StreamedData,
             batch_size: int) -> dict[str, float]:
    """Mean loss terms, object accuracy and mIoU on a split."""
    step.model.eval()
    sums: dict[str, float] = {}
    correct, counts = 0, np.zeros((2, 3), np.int64)
    for batch in data.in_order(batch_size):
        x, target = step.prepare(*batch)
        out = step.run(x)
        for k, v in loss_terms(out, target, step.weights).items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(x)
        if "logits" in out:  # label −1 (a class not trained) is never right
            correct += int((out["logits"].argmax(1) == target["label"]).sum())
        if "seg" in out:  # boxes whose mask is known
            known = target["has_targets"].cpu().numpy()
            counts += segmentation_counts(out["seg"].argmax(1).cpu().numpy()[known],
                                          target["mask"].cpu().numpy()[known])
    metrics = {f"val_{k}": v / len(data) for k, v in sums.items()}
    if "cls" in step.model.heads:
        metrics["val_obj_acc"] = correct / len(data)
    if "seg" in step.model.heads:
        metrics["val_miou"] = segmentation_scores(counts)["miou"]
    return metrics


def monitored_value(entry: dict[str, float], monitor: str) -> float:
    """The value of one history entry that ``monitor`` follows, as lower-is-better: the
    validation loss, or minus the mean of the validation object accuracy and mIoU."""
    if monitor == "val_loss":
        return entry["val_total"]
    scores = [entry[k] for k in ("val_obj_acc", "val_miou") if k in entry]
    return -sum(scores) / len(scores)


def epochs_since_best(history: list[dict[str, float]], monitor: str) -> int:
    """Epochs after the first best one (by ``monitor``): what early stopping counts."""
    values = [monitored_value(entry, monitor) for entry in history]
    return len(values) - 1 - values.index(min(values))


@dataclass
class Progress:
    """Where a run stands: its history, best monitored value, the epoch to train next, epochs
    since the best, and the random stream that orders (and augments) the next epoch."""

    rng: np.random.Generator
    history: list[dict] = field(default_factory=list)
    best: float = math.inf
    epoch: int = 0
    stale: int = 0


@dataclass
class Run:
    """Everything a run trains with."""

    config: TrainConfig
    out: Path
    classes: list[str]
    grid: tuple[int, float]
    train_data: TrainingData | StreamedData
    val_data: TrainingData | StreamedData
    step: TrainStep
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    teacher_run: str | None
    init: dict | None
    precision: str
    threads: int
    machine: str  # `machine_name` of the device
    shard: tuple[int, int] = (0, 1)  # (this worker, workers) of a Ray Train run

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder (worker 0, or the only one)."""
        return self.shard[0] == 0


def _teacher(config: TrainConfig, classes: list[str]) -> tuple[torch.nn.Module | None, str | None]:
    """The teacher network, checked to know the same classes in the same order, and its run
    hash."""
    if config.teacher is None:
        return None, None
    from dsmscale.weights import resolve_model

    path = resolve_model(config.teacher)  # 'default' (the shipped DSM-Net) or a path
    ckpt = load_checkpoint(path)
    if list(ckpt["classes"]) != list(classes):
        raise InputError(path, "teacher classes differ from the dataset's classes")
    check_model_fits(ckpt, path, config.dataset)
    return model_from_checkpoint(ckpt, path), ckpt.get("run_hash")


def _prepare(config: TrainConfig, device: torch.device | None = None, wrap=None) -> Run:
    """Data, model, optimiser and schedule; the run folder is made only once the inputs are
    known to be usable. ``wrap``: what the model runs as (Ray Train's DDP wrapper)."""
    threads = configure_threads(config.threads)
    torch.manual_seed(config.seed)  # before the model is built: it fixes the initial weights
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(config.precision, device)
    classes = dataset_classes(config.dataset)
    train_data = load_training_data(config.dataset, "train", classes, config.limit_train,
                                    config.stream)
    val_data = load_training_data(config.dataset, "val", classes, config.limit_val,
                                  config.stream)
    grid = dataset_grid(config.dataset)
    model = build_model(config.model, len(classes), config.batch_norm)
    init = (None if config.init is None else
            load_initial_weights(model, config.init, config.model, classes, config.dataset))
    teacher, teacher_run = _teacher(config, classes)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    step = TrainStep(model, precision, config.channels_last, config.lr, config.betas,
                     config.loss_weights, device=device, teacher=teacher,
                     distill_loss=config.distill_loss, temperature=config.temperature,
                     hard_weight=config.hard_weight, micro_batch=config.micro_batch, wrap=wrap)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        step.optimizer, max_lr=config.lr, epochs=config.max_epochs,
        steps_per_epoch=math.ceil(len(train_data) / config.batch_size)
    ) if config.schedule == "onecycle" else None
    return Run(config, out, classes, grid, train_data, val_data, step, scheduler, teacher_run,
               init, precision, threads, machine_name(device))


def _resume(run: Run) -> Progress:
    """The progress saved in ``last.pt`` (model, optimiser, schedule and random state restored),
    or a fresh start; a ``last.pt`` of another run is an error."""
    config, last = run.config, run.out / "last.pt"
    if not last.is_file():
        return Progress(rng=np.random.default_rng(config.seed))
    ckpt = load_checkpoint(last, resume=True)
    if ckpt["run_hash"] != config.run_hash():
        raise InputError(last, "belongs to a different run config (use another output)")
    started = (run.init or {}).get("run_hash")
    if (ckpt.get("fine_tuned_from") or {}).get("run_hash") != started:
        raise InputError(last, "was fine-tuned from another checkpoint (use another output)")
    if ckpt.get("teacher_run_hash") != run.teacher_run:  # e.g. 'default' now names another model
        raise InputError(last, f"was distilled from teacher run {ckpt.get('teacher_run_hash')}"
                         f", not {run.teacher_run} (use another output)")
    run.step.model.load_state_dict(ckpt["state_dict"])
    run.step.optimizer.load_state_dict(ckpt["optimizer"])
    if run.scheduler and ckpt["scheduler"]:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["torch_rng"])
    epoch = ckpt["epoch"] + 1
    return Progress(rng=np.random.default_rng([config.seed, epoch]), history=ckpt["history"],
                    best=ckpt["best_val"], epoch=epoch,
                    stale=epochs_since_best(ckpt["history"], config.monitor))


def _train_epoch(run: Run, progress: Progress, show: bool) -> dict[str, float]:
    """One pass over the training split in a shuffled order; the mean loss terms (of this
    worker's rows, on Ray Train)."""
    config, data = run.config, run.train_data
    sums: dict[str, float] = {}
    seen = 0
    bar = tqdm(data.shuffled(progress.rng, config.batch_size), disable=not show, leave=False,
               total=math.ceil(len(data) / config.batch_size),
               desc=f"{config.model} epoch {progress.epoch + 1}", unit="batch")
    for x, target in bar:
        if config.augment:
            x, target = rotate_boxes_180(
                x, target, progress.rng.integers(0, len(WEDGE_ROTATIONS), len(x)))
        rank, workers = run.shard  # a worker trains on its rows of the batch; DDP averages
        usable = len(x) // workers * workers  # every worker as many rows (and micro-batches)
        if usable == 0:
            continue
        x, target = x[rank:usable:workers], {k: v[rank:usable:workers] for k, v in target.items()}
        terms = run.step(x, target)
        if run.scheduler:
            run.scheduler.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{terms['total']:.4f}")
    return {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}


def _checkpoint(run: Run, progress: Progress) -> dict:
    """The network, its record and the state to resume from (`dsmscale.checkpoints`)."""
    config, step = run.config, run.step
    return network_entries(step.model, config.model, run.classes, *run.grid, DENSITY_SCALE,
                           config.batch_norm) | {
        "config": config.model_dump(mode="json"), "run_hash": config.run_hash(),
        "epoch": progress.epoch, "history": progress.history, "best_val": progress.best,
        "optimizer": step.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler else None,
        "torch_rng": torch.get_rng_state(),
        "teacher_run_hash": run.teacher_run,  # which model 'default' or a teacher path was
        "fine_tuned_from": run.init,  # the checkpoint the weights started from
    }


def _end_epoch(run: Run, progress: Progress, entry: dict, show: bool) -> None:
    """Record the epoch, follow the best, and write the checkpoints and history."""
    progress.history.append(entry)
    value = monitored_value(entry, run.config.monitor)
    improved = value < progress.best
    progress.best, progress.stale = (value, 0) if improved else (progress.best,
                                                                 progress.stale + 1)
    if not run.writes:
        return
    ckpt = _checkpoint(run, progress)
    if improved:
        save_checkpoint(ckpt, run.out / "best.pt")
    save_checkpoint(ckpt, run.out / "last.pt")
    write_file_atomic(run.out / "history.json",  # read by other processes while training
                      lambda tmp: tmp.write_text(json.dumps(progress.history, indent=2)))
    if show:
        shown = {k: round(v, 4) for k, v in entry.items() if k.startswith("val_")}
        tqdm.write(f"epoch {progress.epoch + 1}: {shown} ({entry['epoch_s']:.0f} s)")


def train(config: TrainConfig, progress: bool = True, shard: tuple[int, int] = (0, 1),
          device: torch.device | None = None, wrap=None, report=None) -> dict:
    """Train (or resume) a run in this process; returns its history, the best checkpoint's
    path, the epochs trained, and whether it stopped early or finished. A Ray Train worker
    (`dsmscale.training.distributed`) passes its ``shard`` (rank, workers), ``device``, the DDP
    ``wrap`` and ``report`` (called each epoch with its entry and, on worker 0, the folder of
    its checkpoint)."""
    run = _prepare(config, device, wrap)
    run.shard = shard
    state = _resume(run)
    if run.writes:
        (run.out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"),
                                                            sort_keys=False))
    while state.epoch < config.max_epochs and state.stale < config.patience:
        entry = _epoch(run, state, progress and run.writes)
        _end_epoch(run, state, entry, progress and run.writes)
        state.epoch += 1
        if run.shard[1] > 1:  # every worker follows worker 0's early-stopping count
            shared = [state.stale, state.best]
            torch.distributed.broadcast_object_list(shared, src=0)
            state.stale, state.best = shared
        if report is not None:
            report(entry, _checkpoint_folder(run) if run.writes else None)
    if run.writes:
        from dsmscale.report.curves import plot_history

        plot_history(state.history, run.out / "curves.png")
    return run_summary(state.history, run.out, config)


def run_summary(history: list[dict], out: Path, config: TrainConfig) -> dict:
    """What `train` returns: the history, the best checkpoint's path, the epochs trained, and
    whether the run stopped early or finished."""
    stopped = bool(history) and epochs_since_best(history, config.monitor) >= config.patience
    return {"history": history, "best_checkpoint": str(out / "best.pt"), "epochs": len(history),
            "stopped_early": stopped,
            "finished": bool(history) and (stopped or len(history) == config.max_epochs)}


def _epoch(run: Run, state: Progress, show: bool) -> dict:
    """One epoch: training, precise BatchNorm and validation; its history entry."""
    config, start = run.config, time.perf_counter()
    boxes_per_pass = min(config.micro_batch, config.batch_size)
    if config.init is not None:
        set_encoder_trainable(run.step.model, state.epoch >= config.freeze_encoder_epochs)
    entry = {"epoch": state.epoch + 1, **_train_epoch(run, state, show)}
    recalibrate_batch_norm(run.step, run.train_data, batch_size=boxes_per_pass,
                           seed=state.epoch)
    return entry | {**validate(run.step, run.val_data, 2 * boxes_per_pass),
                    "epoch_s": time.perf_counter() - start, "precision": run.precision,
                    "threads": run.threads, "machine": run.machine}


def _checkpoint_folder(run: Run) -> Path:
    """A folder holding (a link to) this epoch's ``last.pt``, for Ray Train to keep."""
    folder = run.out / ".ray_checkpoint"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    os.link(run.out / "last.pt", folder / "last.pt")
    return folder
