"""CSV particle tables. A header row must name the columns (their order and units are not
guessed): ``x, y, z`` in pixels (any order, any case) or in Å (``X [A]``, as TARDIS writes), and
optionally ``particle_id``, ``tomogram``, ``rot, tilt, psi``, ``class_name`` (or the column the
user names), ``score``, ``voxel_size_a`` and ``level``. Commas, tabs, pipes or semicolons separate
the fields. dsmscale writes ``z, y, x`` with the voxel size and level as columns, for a lossless
read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.names import distinct_names
from dsmscale.io.particles.table import ANGLES, ParticleTable, checked, numbers, pixel_size


def write_csv(table: ParticleTable, path: str | os.PathLike) -> Path:
    """CSV with a header; the voxel size and level are stored as columns for a lossless read."""
    df = table.df.assign(voxel_size_a=table.voxel_size_a, level=table.level)
    return write_file_atomic(path, lambda tmp: df.to_csv(tmp, index=False))


#: Header names of coordinates in Å (TARDIS: ``X [A]``), by axis.
_ANGSTROM_COLUMNS = {f"{a} [a]": a for a in "xyz"} | {f"{a}_a": a for a in "xyz"}


def _read_frame(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, sep=r"[,\t|;]", engine="python")
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable CSV file ({str(exc).splitlines()[0]})") from exc
    if df.empty:
        raise InputError(path, "particle table is empty")
    if all(_is_number(c) for c in df.columns):
        raise InputError(path, "has no header row: name the columns (e.g. x,y,z or z,y,x; "
                               "'X [A]' for Å), their order and units are not guessed")
    return df.rename(columns=lambda c: str(c).strip())


def _is_number(text) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _angstrom_to_pixels(df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, bool]:
    """Columns ``X [A]`` etc. (Å) renamed ``x`` etc.: pixels of 1 Å; and whether there were."""
    named = {c: _ANGSTROM_COLUMNS[c.lower()] for c in df.columns if c.lower() in _ANGSTROM_COLUMNS}
    if not named:
        return df, False
    if len(named) != 3 or "voxel_size_a" in df.columns:
        raise InputError(path, f"Å coordinate columns {sorted(named)}: need exactly X, Y and Z")
    return df.rename(columns=named), True


def read_csv(path: str | os.PathLike, voxel_size_a: float | None = None,
             class_column: str | None = None) -> ParticleTable:
    """Read a CSV particle table (see the module docstring)."""
    path = Path(path)
    df, in_angstrom = _angstrom_to_pixels(_read_frame(path), path)
    df = df.rename(columns={c: c.lower() for c in df.columns if c.lower() in {"x", "y", "z"}})
    if df.columns.duplicated().any():
        raise InputError(path, f"names column {df.columns[df.columns.duplicated()][0]!r} twice")
    if not {"x", "y", "z"} <= set(df.columns):
        raise InputError(path, f"has no x, y and z columns (columns: {', '.join(df.columns)})")
    if class_column is not None:
        if class_column not in df.columns:
            raise InputError(path, f"has no class column {class_column!r}")
        df["class_name"] = df.pop(class_column)
    level = _one_value(df, "level", path)
    if level is None:
        level = 0
    elif not (np.isfinite(level) and level >= 0 and level.is_integer()):
        raise InputError(path, f"column level holds {level:g}, not a pyramid level (0, 1, …)")
    file_vs = _one_value(df, "voxel_size_a", path)
    for column in [c for c in (*ANGLES, "score") if c in df.columns]:
        df[column] = numbers(df, [column], path)[:, 0]
    vs = 1.0 if in_angstrom else pixel_size(path, voxel_size_a, file_vs)
    if "particle_id" not in df.columns:
        df.insert(0, "particle_id", np.arange(len(df), dtype=np.int64))
    ids = numbers(df, ["particle_id"], path)[:, 0]
    if not (np.isfinite(ids).all() and (ids % 1 == 0).all()):
        raise InputError(path, "column particle_id holds values that are not whole numbers")
    df["particle_id"] = ids.astype(np.int64)
    df["tomogram"] = (distinct_names(df["tomogram"], path) if "tomogram" in df.columns
                      else path.stem)
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


