"""Shipped model weights: ``default`` (DSM-Net teacher) and ``student`` (distilled), each with a
model card beside it (``*.md``)."""

from __future__ import annotations

from pathlib import Path

from dsmscale.errors import InputError

WEIGHTS = Path(__file__).parent
SHIPPED = {"default": "dsmnet_default.pt", "student": "dsmnet_student.pt"}


def resolve_model(name: str) -> Path:
    """Path of a shipped model by name, or ``name`` itself as a checkpoint path."""
    if name in SHIPPED:
        path = WEIGHTS / SHIPPED[name]
        if not path.is_file():
            raise InputError(path, f"the '{name}' model is not shipped in this build; "
                                   "pass a checkpoint path as model")
        return path
    path = Path(name)
    if not path.is_file():
        raise InputError(path, "checkpoint does not exist")
    return path
