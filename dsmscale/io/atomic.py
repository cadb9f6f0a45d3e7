"""Atomic outputs: build under a temporary name beside the target, rename when complete.

A crash therefore never leaves something at the final path that looks finished.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from dsmscale.errors import InputError


def writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) if needed; one-line errors if it cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(folder, f"cannot create output folder ({exc.strerror})") from exc
    if not os.access(folder, os.W_OK):
        raise InputError(folder, "output folder is not writable")
    return folder


def prepare_output_dir(path: str | os.PathLike, overwrite: bool) -> tuple[Path, Path]:
    """Check that ``path`` can be created; return (final path, temporary path beside it)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "output exists (use --overwrite to replace it)")
    writable_folder(path.parent)
    return path, path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")


def commit_output_dir(tmp: Path, path: Path) -> None:
    """Move a finished temporary folder into place, replacing an old one only now."""
    if path.exists():
        trash = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, trash)
        os.replace(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, path)


def build_output_dir(path: str | os.PathLike, overwrite: bool, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` into a temporary folder and commit it; clean up on any failure."""
    path, tmp = prepare_output_dir(path, overwrite)
    try:
        build(tmp)
        commit_output_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_file_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Run ``write(tmp)`` for a single file, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
