"""Training DSM-Net, its ablations and the baselines: ``dsmscale train --config``.

Paper defaults: Adam (lr 1e-3, betas 0.9/0.99), batch 64, ≤ 100 epochs, early stopping after 15
epochs without a lower validation loss, L = w_cls·CE(cls) + w_seg·CE(seg) + w_rec·MSE(rec) with
cls:seg:rec = 1:10:1 (terms of switched-off heads drop out). A batch is run as micro-batches
whose gradients are accumulated (the same gradient as one pass over the batch), each normalised
by its own BatchNorm statistics ("ghost batch norm", Hoffer et al. 2017): on a CPU, 8 boxes per
pass train ~1.5× faster than 64 (the 40³×32 activations stay in cache). Before each validation
(and so in every saved checkpoint) the BatchNorm statistics are recomputed over 512 training
boxes in micro-batches of the same size. bf16
autocast where the hardware has it (CPU with AMX/AVX-512-bf16, CUDA) and channels_last_3d
tensors; threads set explicitly.

``monitor`` picks what early stopping and ``best.pt`` follow: the validation loss (the paper's
procedure) or the validation score, the mean of object accuracy and mIoU over the model's heads.
With several heads at low SNR the loss can rise while both scores still improve (dataset B).

Checkpoints (``last.pt`` every epoch, ``best.pt`` at each new best) hold the state dict, the
config, the class list and the input normalisation, plus optimiser state for resuming; they are
plain tensors and containers, loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from tqdm.auto import tqdm

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint
from dsmscale.config import JobConfig
from dsmscale.data import (
    DENSITY_SCALE,
    WEDGE_ROTATIONS,
    SplitData,
    check_model_fits,
    dataset_classes,
    dataset_grid,
    load_split,
    rotate_boxes_180,
)
from dsmscale.errors import InputError
from dsmscale.hardware import (
    Precision,
    configure_threads,
    default_micro_batch,
    resolve_precision,
)
from dsmscale.io.atomic import write_file_atomic
from dsmscale.metrics import segmentation_counts, segmentation_scores
from dsmscale.models import MODEL_NAMES, build_model
from dsmscale.models.dsmnet import ARCHITECTURE_VERSION

#: Bumped when the training procedure changes a run's result (part of the run identity).
TRAINING_PROCEDURE_VERSION = 2


#: The paper's batch size (boxes per optimiser step).
BATCH_SIZE = 64


def _device_micro_batch(fields: dict) -> int:
    """`default_micro_batch` for the config's batch size (the paper's if that is invalid)."""
    return default_micro_batch(fields.get("batch_size", BATCH_SIZE))


class TrainConfig(JobConfig):
    """One training run. Paths are folders; loss weights are (cls, seg, rec)."""

    dataset: str = Field(description="dataset folder with particles.parquet and Zarr arrays")
    output: str = Field(description="run folder: checkpoints, history, curves")
    model: Literal[MODEL_NAMES] = "dsmnet"  # type: ignore[valid-type]
    loss_weights: tuple[float, float, float] = (1.0, 10.0, 1.0)
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    batch_size: int = Field(BATCH_SIZE, ge=1, description="boxes per optimiser step")
    micro_batch: int = Field(
        default_factory=_device_micro_batch, ge=1, description="boxes per forward/backward "
        "pass; a batch's gradients are summed over its micro-batches and BatchNorm uses "
        "per-micro-batch statistics. Default: 8 on a CPU (fastest there), the whole batch on a "
        "GPU — the device of the process that builds the config, recorded in RUN/config.yaml "
        "(resume with --config RUN/config.yaml elsewhere to keep it)")
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(15, ge=1, description="epochs without a better monitored value "
                          "before stop")
    monitor: Literal["val_loss", "val_score"] = Field(
        "val_loss", description="what early stopping and best.pt follow: the validation loss "
        "(the paper's) or the validation score, the mean of object accuracy and mIoU over the "
        "model's heads")
    schedule: Literal["constant", "onecycle"] = "constant"
    precision: Precision = "auto"
    channels_last: bool = True
    batch_norm: bool = Field(True, description="batch normalisation after every 3³ conv/deconv "
                             "(ours); False is the papers' plain reading")
    augment: bool = Field(False, description="rotate each training box (with its mask and "
                          "density) by a random one of the 180° rotations about z, y and x that "
                          "keep the missing wedge in place; off in the paper's procedure")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: cores)")
    seed: int = 0
    limit_train: int | None = Field(None, ge=1, description="use only the first N train boxes")
    limit_val: int | None = Field(None, ge=1)
    teacher: str | None = Field(None, description="checkpoint to distil from (soft targets)")
    distill_loss: Literal["mse", "kl"] = Field(
        "mse", description="classification: MSE on logits (Guo et al.) or temperature-scaled KL")
    temperature: float = Field(4.0, gt=0, description="softening temperature for 'kl'")
    hard_weight: float = Field(
        0.5, ge=0, le=1, description="with a teacher: share of the loss from the true labels, "
        "masks and densities (Hinton et al. 2015); the rest from the teacher's outputs")

    def run_hash(self) -> str:
        """Identity of the run: everything that changes its trajectory. The output folder,
        threads, patience and (with a constant schedule) the epoch cap do not, so a run can be
        resumed with a larger budget."""
        exclude = {"output", "threads", "patience"}
        if self.micro_batch >= self.batch_size:  # one pass per batch: runs made before stay valid
            exclude.add("micro_batch")
        if not self.augment:
            exclude.add("augment")
        if self.batch_norm:  # runs made before the option existed stay valid
            exclude.add("batch_norm")
        if self.monitor == "val_loss":  # runs made before the option existed stay valid
            exclude.add("monitor")
        if self.teacher is None:  # hashes of runs made before distillation existed stay valid
            exclude |= {"teacher", "distill_loss", "temperature", "hard_weight"}
        if self.schedule == "constant":
            exclude.add("max_epochs")
        data = self.model_dump(mode="json", exclude=exclude) | {
            "arch": ARCHITECTURE_VERSION, "procedure": TRAINING_PROCEDURE_VERSION}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


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


class TrainStep:
    """One optimisation step with the configured precision and memory format."""

    def __init__(self, model: torch.nn.Module, precision: str = "bf16", channels_last: bool = True,
                 lr: float = 1e-3, betas=(0.9, 0.99), weights=(1.0, 10.0, 1.0),
                 compile_model: bool = False, device: torch.device | None = None,
                 teacher: torch.nn.Module | None = None, distill_loss: str = "mse",
                 temperature: float = 4.0, hard_weight: float = 0.5, micro_batch: int | None = None):
        self.micro_batch = micro_batch
        self.device = device or torch.device("cpu")
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.forward = torch.compile(self.model) if compile_model else self.model
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
        (all of it at once when None); returns the batch's mean loss terms."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        size = self.micro_batch or len(x)
        sums: dict[str, float] = {}
        for start in range(0, len(x), size):
            part = slice(start, start + size)
            terms = self._loss(*self.prepare(x[part], {k: v[part] for k, v in target.items()}))
            share = len(x[part]) / len(x)  # loss means over the batch = share-weighted sum
            (terms["total"] * share).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * share
        self.optimizer.step()
        return sums

    def _loss(self, x: torch.Tensor, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.run(x)
        terms = loss_terms(out, target, self.weights)
        if self.teacher is not None:
            with torch.no_grad():
                taught = self.run(x, self.teacher)
            soft = distill_terms(out, taught, self.weights, **self.distill)
            h = self.hard_weight
            terms = {k: h * terms[k] + (1 - h) * soft[k] for k in terms}
        return terms


@torch.no_grad()
def recalibrate_batch_norm(step: TrainStep, data: SplitData, n: int = 512, batch_size: int = 64,
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
    idx = torch.from_numpy(np.random.default_rng(seed).permutation(len(data))[:n])
    for start in range(0, len(idx), batch_size):
        x, _ = step.prepare(*data.batch(idx[start:start + batch_size]))
        step.run(x)
    for m in norms:
        m.momentum = 0.1
    step.model.eval()


@torch.inference_mode()
def validate(step: TrainStep, data: SplitData, batch_size: int) -> dict[str, float]:
    """Mean loss terms, object accuracy and mIoU on a split."""
    step.model.eval()
    sums: dict[str, float] = {}
    correct, counts = 0, np.zeros((2, 3), np.int64)
    for start in range(0, len(data), batch_size):
        x, target = step.prepare(*data.batch(slice(start, start + batch_size)))
        out = step.run(x)
        for k, v in loss_terms(out, target, step.weights).items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(x)
        if "logits" in out:
            correct += int((out["logits"].argmax(1) == target["label"]).sum())
        if "seg" in out:
            counts += segmentation_counts(out["seg"].argmax(1).cpu().numpy(),
                                          target["mask"].cpu().numpy())
    metrics = {f"val_{k}": v / len(data) for k, v in sums.items()}
    if "cls" in step.model.heads:
        metrics["val_obj_acc"] = correct / len(data)
    if "seg" in step.model.heads:
        metrics["val_miou"] = segmentation_scores(counts)["miou"]
    return metrics


#: What each ``monitor`` follows, in words (model cards).
MONITOR_TEXT = {"val_loss": "lowest validation loss",
                "val_score": "highest mean of validation object accuracy and mIoU"}


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


def _checkpoint(step: TrainStep, config: TrainConfig, classes: list[str], grid: dict, epoch: int,
                history: list[dict], best: float, scheduler, teacher_run: str | None) -> dict:
    """Everything to resume the run, and to use its model: classes, input ``box`` (voxels) and
    ``voxel_size_a`` (Å) the network was trained on, input and density normalisation."""
    return {
        "format": "dsmscale-checkpoint-1",
        "model": config.model, "heads": list(step.model.heads), "n_classes": len(classes),
        "batch_norm": config.batch_norm,
        "classes": classes, "state_dict": step.model.state_dict(),
        **grid,
        "normalisation": {"input": "per_box_zscore", "density_scale": DENSITY_SCALE},
        "config": config.model_dump(mode="json"), "run_hash": config.run_hash(),
        "epoch": epoch, "history": history, "best_val": best,
        "optimizer": step.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler else None,
        "torch_rng": torch.get_rng_state(),
        "teacher_run_hash": teacher_run,  # which model 'default' or a teacher path was
    }


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


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) a run; returns the final history entry plus the best checkpoint path."""
    out = Path(config.output)
    threads = configure_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(config.precision, device)
    classes = dataset_classes(config.dataset)
    train_data = load_split(config.dataset, "train", classes, config.limit_train)
    val_data = load_split(config.dataset, "val", classes, config.limit_val)
    grid = dict(zip(("box", "voxel_size_a"), dataset_grid(config.dataset), strict=True))
    model = build_model(config.model, len(classes), config.batch_norm)
    teacher, teacher_run = _teacher(config, classes)
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be usable
    step = TrainStep(model, precision, config.channels_last, config.lr, config.betas,
                     config.loss_weights, device=device, teacher=teacher,
                     distill_loss=config.distill_loss, temperature=config.temperature,
                     hard_weight=config.hard_weight, micro_batch=config.micro_batch)
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        step.optimizer, max_lr=config.lr, epochs=config.max_epochs,
        steps_per_epoch=steps_per_epoch) if config.schedule == "onecycle" else None
    history, best, start_epoch, stale = [], math.inf, 0, 0
    last = out / "last.pt"
    if last.is_file():
        ckpt = load_checkpoint(last, resume=True)
        if ckpt["run_hash"] != config.run_hash():
            raise InputError(last, "belongs to a different run config (use another output)")
        if ckpt.get("teacher_run_hash") != teacher_run:  # e.g. 'default' now names another model
            raise InputError(last, f"was distilled from teacher run {ckpt.get('teacher_run_hash')}"
                             f", not {teacher_run} (use another output)")
        model.load_state_dict(ckpt["state_dict"])
        step.optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler and ckpt["scheduler"]:
            scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        history, best, start_epoch = ckpt["history"], ckpt["best_val"], ckpt["epoch"] + 1
        stale = epochs_since_best(history, config.monitor)
        rng = np.random.default_rng([config.seed, start_epoch])
    (out / "config.yaml").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    for epoch in range(start_epoch, config.max_epochs):
        if stale >= config.patience:
            break
        t0 = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(train_data)))
        sums: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f"{config.model} epoch {epoch + 1}",
                   disable=not progress, leave=False, unit="batch")
        for b in bar:
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            x, target = train_data.batch(idx)
            if config.augment:
                x, target = rotate_boxes_180(
                    x, target, rng.integers(0, len(WEDGE_ROTATIONS), len(idx)))
            terms = step(x, target)
            if scheduler:
                scheduler.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            bar.set_postfix(loss=f"{terms['total']:.4f}")
        passes = min(config.micro_batch, config.batch_size)
        recalibrate_batch_norm(step, train_data, batch_size=passes, seed=epoch)
        entry = {"epoch": epoch + 1, **{f"train_{k}": v / len(train_data) for k, v in sums.items()},
                 **validate(step, val_data, 2 * passes),
                 "epoch_s": time.perf_counter() - t0, "precision": precision, "threads": threads}
        history.append(entry)
        value = monitored_value(entry, config.monitor)
        improved = value < best
        best, stale = (value, 0) if improved else (best, stale + 1)
        ckpt = _checkpoint(step, config, classes, grid, epoch, history, best, scheduler,
                           teacher_run)
        if improved:
            write_file_atomic(out / "best.pt", partial(torch.save, ckpt))
        write_file_atomic(last, partial(torch.save, ckpt))
        write_file_atomic(out / "history.json",  # read by other processes while training
                          lambda tmp: tmp.write_text(json.dumps(history, indent=2)))
        if progress:
            shown = {k: round(v, 4) for k, v in entry.items() if k.startswith("val_")}
            tqdm.write(f"epoch {epoch + 1}: {shown} ({entry['epoch_s']:.0f} s)")
    from dsmscale.report.curves import plot_history

    plot_history(history, out / "curves.png")
    converged = bool(history) and (stale >= config.patience or len(history) == config.max_epochs)
    return {"history": history, "best_checkpoint": str(out / "best.pt"), "epochs": len(history),
            "stopped_early": stale >= config.patience, "finished": converged}
