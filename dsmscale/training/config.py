"""The typed configuration of one training run (``dsmscale train`` and ``dsmscale distill``),
and the run's identity (`TrainConfig.run_hash`)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from dsmscale.config import JobConfig
from dsmscale.hardware import Precision, default_micro_batch
from dsmscale.models import MODEL_NAMES
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
    model: Literal[MODEL_NAMES] = Field(  # type: ignore[valid-type]
        "dsmnet", description="dsmnet, its ablations cls, seg, cls_rec, cls_seg, the baselines "
        "ssn3d_ed, dsrf3d_v2, or the students dsmnet_small, guo_l, guo_m, guo_s")
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
    max_epochs: int = Field(100, ge=1, description="epoch cap")
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
    seed: int = Field(0, description="random seed: initial weights, batch order, augmentation")
    limit_train: int | None = Field(None, ge=1, description="use only the first N train boxes")
    limit_val: int | None = Field(None, ge=1, description="use only N validation boxes")
    stream: bool | None = Field(
        None, description="stream the splits from the dataset's arrays in shuffled chunk "
        "blocks (bounded memory) instead of loading them; default: when a split would take "
        "more than 8 GB in memory")
    workers: int = Field(1, ge=1, description="data-parallel workers on Ray Train (DDP; gloo "
                         "on CPUs); 1 trains in this process")
    use_gpu: bool | None = Field(None, description="with workers: one GPU per worker")
    init: str | None = Field(
        None, description="fine-tune: start from this checkpoint ('default', 'student' or a "
        "path; same model), with a classification head for the dataset's classes (rows of "
        "classes it knows copied); set a lower lr, e.g. 1e-4")
    freeze_encoder_epochs: int = Field(0, ge=0, description="fine-tune: epochs at the start "
                                       "in which the encoder is not trained")
    teacher: str | None = Field(None, description="checkpoint to distil from (soft targets)")
    distill_loss: Literal["mse", "kl"] = Field(
        "mse", description="classification: MSE on logits (Guo et al.) or temperature-scaled KL")
    temperature: float = Field(4.0, gt=0, description="softening temperature for 'kl'")
    hard_weight: float = Field(
        0.5, ge=0, le=1, description="with a teacher: share of the loss from the true labels, "
        "masks and densities (Hinton et al. 2015); the rest from the teacher's outputs")

    @model_validator(mode="after")
    def _no_frozen_encoder_across_workers(self):
        if self.freeze_encoder_epochs and self.init is None:
            raise ValueError("freeze_encoder_epochs holds the encoder of a checkpoint: give "
                             "init (e.g. 'default')")
        if self.workers > 1 and self.freeze_encoder_epochs:
            raise ValueError("freeze_encoder_epochs works in one process only (DDP keeps every "
                             "weight trainable): use workers 1")
        return self

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
        if self.workers == 1:  # runs made before Ray Train existed stay valid
            exclude |= {"workers", "use_gpu"}
        if self.stream is None:  # decided by the dataset's size alone
            exclude.add("stream")
        if self.init is None:  # hashes of runs made before fine-tuning existed stay valid
            exclude |= {"init", "freeze_encoder_epochs"}
        if self.teacher is None:  # hashes of runs made before distillation existed stay valid
            exclude |= {"teacher", "distill_loss", "temperature", "hard_weight"}
        if self.schedule == "constant":
            exclude.add("max_epochs")
        data = self.model_dump(mode="json", exclude=exclude) | {
            "arch": ARCHITECTURE_VERSION, "procedure": TRAINING_PROCEDURE_VERSION}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


