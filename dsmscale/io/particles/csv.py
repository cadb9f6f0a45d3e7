"""CSV particle tables: columns ``z, y, x`` (pixels) with optional ids, tomogram, angles, class
and score; the voxel size and level are written as columns for a lossless read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.particles.table import ANGLES, ParticleTable, checked, numbers, pixel_size


def write_csv(table: ParticleTable, path: str | os.PathLike) -> Path:
    """CSV with a header; the voxel size and level are stored as columns for a lossless read."""
    df = table.df.assign(voxel_size_a=table.voxel_size_a, level=table.level)
    return write_file_atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def read_csv(path: str | os.PathLike, voxel_size_a: float | None = None) -> ParticleTable:
    """Read a CSV with columns ``z, y, x`` (pixels) and optional ``particle_id``, ``tomogram``,
    angles, ``class_name``, ``score``, ``voxel_size_a`` and ``level``."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable CSV file ({str(exc).splitlines()[0]})") from exc
    if df.empty:
        raise InputError(path, "particle table is empty")
    level = _one_value(df, "level", path)
    if level is None:
        level = 0
    elif not (np.isfinite(level) and level >= 0 and level.is_integer()):
        raise InputError(path, f"column level holds {level:g}, not a pyramid level (0, 1, …)")
    file_vs = _one_value(df, "voxel_size_a", path)
    for column in [c for c in (*ANGLES, "score") if c in df.columns]:
        df[column] = numbers(df, [column], path)[:, 0]
    vs = pixel_size(path, voxel_size_a, file_vs)
    if "particle_id" not in df.columns:
        df.insert(0, "particle_id", np.arange(len(df), dtype=np.int64))
    if "tomogram" not in df.columns:
        df["tomogram"] = path.stem
    df["tomogram"] = df["tomogram"].astype(str)
    if "class_name" in df.columns:
        df["class_name"] = df["class_name"].astype(str)
    return checked(path, lambda: ParticleTable(df, vs, int(level)))


def _one_value(df: pd.DataFrame, column: str, path: Path) -> float | None:
    """The one number a table-wide ``column`` holds (taken out of ``df``), None without it; rows
    that disagree are an `InputError` (coordinates would be scaled by the first row's)."""
    if column not in df.columns:
        return None
    values = np.unique(numbers(df, [column], path)[:, 0])
    if len(values) > 1:
        raise InputError(path, f"column {column} holds {len(values)} values "
                               f"({', '.join(f'{v:g}' for v in values[:3])}); a table holds one")
    df.pop(column)
    return float(values[0])


