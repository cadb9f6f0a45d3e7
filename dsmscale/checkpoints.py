"""Checkpoint files: loaded safely (``weights_only=True``), validated, turned into models."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from dsmscale.errors import InputError
from dsmscale.models import MODEL_NAMES, build_model

#: Checkpoints written before the input grid was recorded were all trained on the simulator's
#: 40³ boxes at 10 Å per voxel.
LEGACY_GRID = (40, 10.0)


#: What every checkpoint holds to rebuild and use its network (shipped ones too).
MODEL_KEYS = ("model", "heads", "n_classes", "classes", "state_dict", "normalisation")
#: What a training run's checkpoint (``last.pt``) adds to resume it.
RESUME_KEYS = ("run_hash", "epoch", "history", "best_val", "optimizer", "scheduler", "torch_rng")


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
    if not isinstance(ckpt, dict) or ckpt.get("format") != "dsmscale-checkpoint-1":
        raise InputError(path, "not a dsmscale checkpoint")
    missing = [k for k in MODEL_KEYS + (RESUME_KEYS if resume else ()) if k not in ckpt]
    if missing:
        raise InputError(path, f"incomplete checkpoint: no {', '.join(missing)}")
    if ckpt["model"] not in MODEL_NAMES:
        raise InputError(path, f"unknown model {ckpt['model']!r}; dsmscale builds "
                               f"{', '.join(MODEL_NAMES)}")
    return ckpt


def model_from_checkpoint(ckpt: dict, source: str | os.PathLike = "checkpoint"):
    """Rebuild the network of a checkpoint; a state dict of another architecture is an error."""
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
