"""The one particle table every reader fills and every writer reads.

Conventions (stated once, used everywhere):
- Coordinates ``z, y, x`` are in **pixels of one pyramid level** of the tomogram (0-based voxel
  indices, voxel centres at integers); the table carries that level's voxel size in Å.
- Orientation, when present, is RELION's ZYZ Euler triple ``rot, tilt, psi`` in degrees
  (`dsmscale.rotations`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.errors import InputError
from dsmscale.geometry import pixels_to_angstrom, to_level

COORDS = ["z", "y", "x"]
ANGLES = ["rot", "tilt", "psi"]


@dataclass(frozen=True)
class ParticleTable:
    """Particles of one or more tomograms.

    Attributes:
        df: columns ``particle_id`` (int64, unique), ``tomogram`` (str), ``z, y, x`` (float64,
            pixels at ``level``) and optionally ``rot, tilt, psi`` (deg), ``class_name`` (str),
            ``score`` (float64).
        voxel_size_a: voxel size in Å of the pixel grid the coordinates refer to.
        level: pyramid level the coordinates refer to (0 = full resolution).
    """

    df: pd.DataFrame
    voxel_size_a: float
    level: int = 0

    def __post_init__(self):
        validate_particles(self.df, self.voxel_size_a, source=None)

    def __len__(self) -> int:
        return len(self.df)

    def at_level(self, level: int) -> ParticleTable:
        """The same particles with coordinates in pixels of another pyramid level
        (`dsmscale.geometry.to_level`)."""
        if level == self.level:
            return self
        df = self.df.copy()
        df[COORDS] = to_level(df[COORDS].to_numpy(), self.level, level)
        voxel_size_a = self.voxel_size_a / 2.0**self.level * 2.0**level
        return replace(self, df=df, voxel_size_a=voxel_size_a, level=level)

    def on_grid(self, voxel_size_a: float) -> ParticleTable:
        """The same particles in pixels of level 0 of a grid of ``voxel_size_a`` Å (the same
        physical positions, e.g. a table in unbinned tilt-series pixels on a binned tomogram)."""
        if self.level == 0 and math.isclose(voxel_size_a, self.voxel_size_a, rel_tol=1e-12):
            return self
        df = self.df.copy()
        df[COORDS] = self.coordinates_a() / voxel_size_a
        return replace(self, df=df, voxel_size_a=float(voxel_size_a), level=0)

    def coordinates_a(self) -> np.ndarray:
        """(N, 3) coordinates in Å, (z, y, x), relative to the centre of voxel 0 of level 0."""
        return pixels_to_angstrom(self.df[COORDS].to_numpy(), self.voxel_size_a, self.level)


def concat_tables(tables: list[ParticleTable]) -> ParticleTable:
    """Several tables as one, in pixels of level 0 of the first one's pixel size (positions kept
    in Å); a column (angles, class, score) is kept only where every table has it, and particle
    ids are renumbered 0, 1, … when the tables' ids collide."""
    grid = tables[0].voxel_size_a / 2.0**tables[0].level
    df = pd.concat([t.on_grid(grid).df for t in tables], ignore_index=True, join="inner")
    if df["particle_id"].duplicated().any():
        df["particle_id"] = np.arange(len(df), dtype=np.int64)
    return ParticleTable(df, grid)


def numbers(df: pd.DataFrame, columns: list[str], source) -> np.ndarray:
    """``df[columns]`` as float64; a value that is no number raises `InputError` naming the
    column, the row and the value (an empty cell is NaN, left to the caller)."""
    values = df[columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & df[columns].notna()
    if bad.to_numpy().any():
        column = bad.any().idxmax()
        row = bad[column].to_numpy().argmax()
        raise InputError(source, f"column {column} holds {df[column].iloc[row]!r} (row {row + 1}), "
                                 "not a number")
    return values.to_numpy(dtype=float)


def check_voxel_size(voxel_size_a: float, source) -> None:
    """A voxel size (Å) must be a positive, finite number."""
    if not (np.isfinite(voxel_size_a) and voxel_size_a > 0):
        raise InputError(source, f"voxel size must be positive, got {voxel_size_a:g} Å")


def validate_particles(df: pd.DataFrame, voxel_size_a: float, source) -> None:
    """Check the table's columns and values; raise `InputError` naming ``source``."""
    missing = [c for c in ["particle_id", "tomogram", *COORDS] if c not in df.columns]
    if missing:
        raise InputError(source, f"particle table lacks columns {missing}")
    check_voxel_size(voxel_size_a, source)
    if not np.isfinite(numbers(df, COORDS, source)).all():
        raise InputError(source, "particle coordinates contain NaN/Inf")
    if not pd.api.types.is_integer_dtype(df["particle_id"]):
        raise InputError(source, "particle ids are not all whole numbers")
    present = [c for c in ANGLES if c in df.columns]
    if present and (len(present) < 3 or not np.isfinite(numbers(df, ANGLES, source)).all()):
        raise InputError(source, "holds orientations (rot, tilt, psi) for some particles or "
                                 "axes only")
    dup = df["particle_id"].duplicated()
    if dup.any():
        raise InputError(source, f"{int(dup.sum())} duplicate particle ids "
                                 f"(first: {df['particle_id'][dup].iloc[0]})")


def make_particles(
    coords_zyx_px: np.ndarray, tomogram: str | list[str], voxel_size_a: float, level: int = 0,
    ids: np.ndarray | None = None, **columns,
) -> ParticleTable:
    """Build a table from an (N, 3) array of (z, y, x) pixel coordinates and optional columns."""
    coords = np.asarray(coords_zyx_px, dtype=float).reshape(-1, 3)
    df = pd.DataFrame({
        "particle_id": np.arange(len(coords), dtype=np.int64) if ids is None
        else np.asarray(ids, dtype=np.int64),
        "tomogram": tomogram,
        "z": coords[:, 0], "y": coords[:, 1], "x": coords[:, 2],
        **columns,
    })
    return ParticleTable(df, float(voxel_size_a), level)


def from_angstrom(
    zyx_a: np.ndarray, voxel_size_a: float, ids: np.ndarray | None = None, **columns,
) -> ParticleTable:
    """A table from (N, 3) positions in Å (z, y, x, from the centre of voxel 0), in pixels of
    ``voxel_size_a`` (level 0); ``columns`` as for `make_particles` (``tomogram`` required)."""
    tomogram = columns.pop("tomogram")
    return make_particles(np.asarray(zyx_a, dtype=float) / voxel_size_a, tomogram, voxel_size_a,
                          ids=ids, **columns)


def pixel_size(path: Path, given: float | None, recorded: float | None) -> float:
    """The pixel size (Å) of a table's coordinates: the one it records, else the one given; the
    two disagreeing is an error (coordinates would be scaled wrongly without a sign)."""
    if given is not None and recorded is not None and not math.isclose(given, recorded,
                                                                        rel_tol=1e-3):
        raise InputError(path, f"records pixel size {recorded:g} Å but {given:g} Å was given")
    if recorded is None and given is None:
        raise InputError(path, "records no pixel size; pass the voxel size (Å, --voxel-size)")
    return recorded if recorded is not None else given


def checked(path, build):
    """Run a table constructor, re-raising its `InputError` with the file named."""
    try:
        return build()
    except InputError as exc:
        raise InputError(path, exc.problem) from exc


