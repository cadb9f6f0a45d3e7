"""Motive lists of the MATLAB-era tools: Dynamo tables (``.tbl``) and STOPGAP motive lists (STAR
``data_stopgap_motivelist``). Neither records a pixel size, so it must be given; their tomograms are
numbered, so a tomogram is named by its number.

- Dynamo ``.tbl`` (whitespace-separated, one particle per row; columns numbered from 1): 1 tag,
  4–6 shifts dx dy dz, 7–9 Euler angles tdrot tilt narot (deg, ZXZ), 20 tomogram number,
  22 class, 24–26 position x y z (pixels). Centre = position + shift.
- STOPGAP: ``orig_{x,y,z}`` + ``{x,y,z}_shift`` (pixels), ``tomo_num``, ``class``, ``score``;
  its angles are not read.

Dynamo's Euler angles are extrinsic ZXZ and passive, RELION's intrinsic ZYZ and passive (the
``eulerangles`` package's definitions), so ``rot = narot − 90°, tilt = tilt, psi = tdrot + 90°``
(`dynamo_to_relion`; dynamo2relion and cryoCAT convert the same way).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.errors import InputError
from dsmscale.io.particles.table import (
    ParticleTable,
    check_voxel_size,
    checked,
    from_angstrom,
    numbers,
)
from dsmscale.rotations import normalise_relion_angles

#: Dynamo's columns (0-based here) that dsmscale reads.
TAG, SHIFTS, ANGLES, TOMOGRAM, CLASS, POSITION = 0, slice(3, 6), slice(6, 9), 19, 21, slice(23, 26)


def dynamo_to_relion(angles_deg: np.ndarray) -> np.ndarray:
    """(n, 3) Dynamo (tdrot, tilt, narot) as RELION (rot, tilt, psi), canonical ranges."""
    tdrot, tilt, narot = np.asarray(angles_deg, float).reshape(-1, 3).T
    return normalise_relion_angles(np.stack([narot - 90.0, tilt, tdrot + 90.0], axis=1))


def read_dynamo(path: str | os.PathLike, voxel_size_a: float | None) -> ParticleTable:
    """Read a Dynamo table (pixels of ``voxel_size_a``, which must be given)."""
    path = Path(path)
    _need_pixel_size(path, voxel_size_a, "a Dynamo table")
    try:
        values = np.loadtxt(path, ndmin=2)
    except ValueError as exc:
        raise InputError(path, f"not a Dynamo table ({str(exc).splitlines()[0]})") from exc
    if values.shape[1] < 26:
        raise InputError(path, f"has {values.shape[1]} columns; a Dynamo table has at least 26")
    xyz_px = values[:, POSITION] + values[:, SHIFTS]
    angles = dynamo_to_relion(values[:, ANGLES])
    tags = values[:, TAG].astype(np.int64)
    return checked(path, lambda: from_angstrom(
        xyz_px[:, ::-1] * voxel_size_a, voxel_size_a,
        ids=tags if len(np.unique(tags)) == len(tags) else None,
        tomogram=_numbered(values[:, TOMOGRAM]), rot=angles[:, 0], tilt=angles[:, 1],
        psi=angles[:, 2], class_name=_numbered(values[:, CLASS])))


def read_stopgap(path: Path, df: pd.DataFrame, voxel_size_a: float | None) -> ParticleTable:
    """Positions, tomogram, class and score of a STOPGAP motive list (its angles are left out)."""
    _need_pixel_size(path, voxel_size_a, "a STOPGAP motive list")
    needed = [f"orig_{a}" for a in "xyz"] + [f"{a}_shift" for a in "xyz"] + ["tomo_num"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(path, f"STOPGAP motive list lacks {', '.join(missing)}")
    values = numbers(df, needed, path)
    if not np.isfinite(values[:, 6]).all():
        raise InputError(path, "STOPGAP motive list has particles without a tomo_num")
    xyz_px = values[:, :3] + values[:, 3:6]
    extra = {"class_name": _numbered(numbers(df, ["class"], path)[:, 0])} if "class" in df else {}
    if "score" in df.columns:
        extra["score"] = numbers(df, ["score"], path)[:, 0]
    return checked(path, lambda: from_angstrom(
        xyz_px[:, ::-1] * voxel_size_a, voxel_size_a, tomogram=_numbered(values[:, 6]),
        **extra))


def _need_pixel_size(path: Path, voxel_size_a: float | None, what: str) -> None:
    if voxel_size_a is None:
        raise InputError(path, f"{what} records no pixel size: pass the voxel size (Å, --voxel-size)")
    check_voxel_size(voxel_size_a, path)


def _numbered(values: np.ndarray) -> np.ndarray:
    """Numbers (tomograms, classes) as names: 3.0 → "3" (each distinct value formatted once)."""
    unique, inverse = np.unique(values, return_inverse=True)
    return np.array([f"{v:g}" for v in unique], dtype=object)[inverse]
