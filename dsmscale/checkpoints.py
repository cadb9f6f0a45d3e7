"""Checkpoint files, written down once: what they hold, how they are saved, loaded safely
(``weights_only=True``) and validated, and how they become models.

A checkpoint is a dict of plain tensors and containers (`torch.save`, a zip archive):

- to rebuild and use its network (`MODEL_KEYS`, every checkpoint, shipped ones too):
  ``format``, ``model`` (a `dsmscale.models.MODEL_NAMES` name), ``heads``, ``n_classes``,
  ``classes``, ``state_dict``, ``normalisation`` (``input``: per-box z-score;
  ``density_scale``: Da/voxel of a recovered density of 1), ``box`` (voxels) and
  ``voxel_size_a`` (Å) of the boxes it was trained on, ``batch_norm``;
- to say where it came from (`RECORD_KEYS`): ``config`` (the training config), ``run_hash``,
  ``epoch`` (0-based, of these weights), ``history``, ``best_val``, ``teacher_run_hash``,
  ``fine_tuned_from`` (the checkpoint a fine-tuned run started from);
- to resume training (`RESUME_KEYS`, a run's ``last.pt`` and ``best.pt``): ``optimizer``,
  ``scheduler``, ``torch_rng``.

Shipped models (`slim_checkpoint`) keep the first two groups.
"""

from __future__ import annotations

import os
import zipfile
from functools import partial
from pathlib import Path

import torch

from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.dataset import check_grid
from dsmscale.models import MODEL_NAMES, build_model

FORMAT = "dsmscale-checkpoint-1"
#: Checkpoints written before the input grid was recorded were all trained on the simulator's
#: 40³ boxes at 10 Å per voxel.
LEGACY_GRID = (40, 10.0)
#: What every checkpoint holds to rebuild and use its network (shipped ones too).
MODEL_KEYS = ("model", "heads", "n_classes", "classes", "state_dict", "normalisation")
#: What says where a model came from; kept in shipped models.
RECORD_KEYS = ("config", "run_hash", "epoch", "history", "best_val", "teacher_run_hash",
               "fine_tuned_from")
#: What a training run's checkpoint adds to resume it.
RESUME_KEYS = ("run_hash", "epoch", "history", "best_val", "optimizer", "scheduler", "torch_rng")


def network_entries(model: torch.nn.Module, name: str, classes: list[str], box: int,
                    voxel_size_a: float, density_scale: float, batch_norm: bool) -> dict:
    """The `MODEL_KEYS` entries of a network ``name`` (and its input grid: ``box``³ voxels of
    ``voxel_size_a`` Å)."""
    return {"format": FORMAT, "model": name, "heads": list(model.heads),
            "n_classes": len(classes), "classes": list(classes), "batch_norm": batch_norm,
            "state_dict": model.state_dict(), "box": box, "voxel_size_a": voxel_size_a,
            "normalisation": {"input": "per_box_zscore", "density_scale": density_scale}}


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> Path:
    """Write a checkpoint atomically (a temporary name, then a rename)."""
    return write_file_atomic(path, partial(torch.save, checkpoint))


def slim_checkpoint(checkpoint: dict) -> dict:
    """A checkpoint to ship: the network and its record, without the optimiser state, with the
    input grid written out (`model_grid`)."""
    keep = ("format", *MODEL_KEYS, "box", "voxel_size_a", "batch_norm", *RECORD_KEYS)
    slim = {k: checkpoint[k] for k in keep if k in checkpoint}
    slim["state_dict"] = {k: v.clone() for k, v in checkpoint["state_dict"].items()}
    slim["box"], slim["voxel_size_a"] = model_grid(checkpoint)
    return slim


def load_checkpoint(path: str | os.PathLike, resume: bool = False) -> dict:
    """Load a dsmscale checkpoint safely (``weights_only=True``), checked to hold `MODEL_KEYS`
    (and `RESUME_KEYS` with ``resume``) and a known model; one-line errors if broken."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint does not exist")
    if not zipfile.is_zipfile(path):
        raise InputError(path, "not a checkpoint: torch.save writes a zip archive, and this file "
                               "is none (another format, or truncated)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for broken files
        raise InputError(path, f"not a readable checkpoint ({str(exc).splitlines()[0]})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(path, "not a dsmscale checkpoint")
    missing = [k for k in MODEL_KEYS + (RESUME_KEYS if resume else ()) if k not in ckpt]
    if missing:
        raise InputError(path, f"incomplete checkpoint: no {', '.join(missing)}")
    if ckpt["model"] not in MODEL_NAMES:
        raise InputError(path, f"unknown model {ckpt['model']!r}; dsmscale builds "
                               f"{', '.join(MODEL_NAMES)}")
    return ckpt


def model_from_checkpoint(ckpt: dict, source: str | os.PathLike = "checkpoint"):
    """Rebuild the network of a checkpoint in eval mode; a state dict of another architecture is
    an error."""
    model = build_model(ckpt["model"], ckpt["n_classes"], ckpt.get("batch_norm", True))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise InputError(source, f"weights do not fit model {ckpt['model']!r} "
                                 f"({str(exc).splitlines()[0]})") from exc
    return model.eval()


def model_grid(ckpt: dict) -> tuple[int, float]:
    """The input box edge (voxels) and voxel size (Å) a checkpoint's network was trained on."""
    return int(ckpt.get("box", LEGACY_GRID[0])), float(ckpt.get("voxel_size_a", LEGACY_GRID[1]))


def check_model_fits(ckpt: dict, checkpoint: str | os.PathLike,
                     dataset: str | os.PathLike) -> None:
    """The dataset's boxes are those the checkpoint's network was trained on (`model_grid`)."""
    check_grid(dataset, *model_grid(ckpt), checkpoint)
