"""RELION STAR particle files: 3.1 pixel coordinates and RELION 5 centred Å.

- RELION 3.1 STAR: ``rlnCoordinateX/Y/Z`` in pixels (xyz order), ``rlnMicrographName`` or
  ``rlnTomoName`` names the tomogram.
- RELION 5 STAR: ``rlnCenteredCoordinateX/Y/ZAngst`` in Å relative to the tomogram centre, which
  RELION places at ``size / 2`` pixels; converting needs the tomogram shape and voxel size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import starfile

from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.particles.table import (
    ANGLES,
    COORDS,
    ParticleTable,
    checked,
    make_particles,
    numbers,
    pixel_size,
)

StarStyle = Literal["relion3", "relion5"]


def read_star(
    path: str | os.PathLike, voxel_size_a: float | None = None,
    tomogram_shape_zyx: tuple[int, int, int] | None = None,
) -> ParticleTable:
    """Read RELION 3.1 or RELION 5 particle coordinates (the style is detected from columns).

    Args:
        path: STAR file.
        voxel_size_a: pixel size in Å; if None, taken from ``rlnTomoTiltSeriesPixelSize``,
            ``rlnImagePixelSize`` or ``rlnDetectorPixelSize`` when present.
        tomogram_shape_zyx: needed for RELION 5 centred coordinates.
    """
    path = Path(path)
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # noqa: BLE001 - starfile raises parser-specific errors
        raise InputError(path, f"not a readable STAR file ({exc})") from exc
    df = blocks.get("particles", next(iter(blocks.values()), None))
    if df is None or not isinstance(df, pd.DataFrame) or df.empty:
        raise InputError(path, "STAR file holds no particle rows")
    voxel_size_a = pixel_size(path, voxel_size_a, _star_pixel_size(df, blocks.get("optics"), path))
    if {"rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"} <= set(df.columns):
        xyz = numbers(df, ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"], path)
    elif {f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"} <= set(df.columns):
        if tomogram_shape_zyx is None:
            raise InputError(path, "RELION 5 centred coordinates need the tomogram shape")
        centre_xyz = np.asarray(tomogram_shape_zyx[::-1], dtype=float) / 2
        cols = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
        xyz = numbers(df, cols, path) / voxel_size_a + centre_xyz
    else:
        raise InputError(path, "STAR file has no coordinate columns "
                               "(rlnCoordinateX/Y/Z or rlnCenteredCoordinateX/Y/ZAngst)")
    tomo_col = next((c for c in ("rlnTomoName", "rlnMicrographName") if c in df.columns), None)
    extra = {}
    if {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"} <= set(df.columns):
        extra.update(zip(ANGLES, numbers(df, ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"],
                                         path).T, strict=True))
    if "rlnClassName" in df.columns:
        extra["class_name"] = df["rlnClassName"].astype(str).to_numpy()
    if "rlnAutopickFigureOfMerit" in df.columns:
        extra["score"] = numbers(df, ["rlnAutopickFigureOfMerit"], path)[:, 0]
    ids = df["dsmParticleId"].to_numpy() if "dsmParticleId" in df.columns else None
    tomo = df[tomo_col].astype(str).to_numpy() if tomo_col else path.stem
    return checked(path, lambda: make_particles(xyz[:, ::-1], tomo, voxel_size_a, ids=ids,
                                                 **extra))



def _star_pixel_size(df: pd.DataFrame, optics: pd.DataFrame | None, path: Path) -> float | None:
    for table in (df, optics):
        if table is None:
            continue
        for col in ("rlnTomoTiltSeriesPixelSize", "rlnImagePixelSize", "rlnDetectorPixelSize"):
            if col in table.columns:
                return float(numbers(table, [col], path)[0, 0])
    return None



def write_star(
    table: ParticleTable, path: str | os.PathLike, style: StarStyle = "relion3",
    tomogram_shape_zyx: tuple[int, int, int] | None = None,
) -> Path:
    """Write a RELION STAR particle file (3.1 pixel or 5 centred-Å coordinates)."""
    df = table.df
    xyz = df[COORDS[::-1]].to_numpy()
    out = {"rlnTomoName": df["tomogram"].astype(str).to_numpy()}
    if style == "relion3":
        out.update(rlnCoordinateX=xyz[:, 0], rlnCoordinateY=xyz[:, 1], rlnCoordinateZ=xyz[:, 2])
    else:
        if tomogram_shape_zyx is None:
            raise ValueError("RELION 5 centred coordinates need tomogram_shape_zyx")
        centred = (xyz - np.asarray(tomogram_shape_zyx[::-1], float) / 2) * table.voxel_size_a
        for i, axis in enumerate("XYZ"):
            out[f"rlnCenteredCoordinate{axis}Angst"] = centred[:, i]
    if set(ANGLES) <= set(df.columns):
        out.update(rlnAngleRot=df["rot"], rlnAngleTilt=df["tilt"], rlnAnglePsi=df["psi"])
    if "class_name" in df.columns:
        out["rlnClassName"] = df["class_name"].astype(str)
    if "score" in df.columns:
        out["rlnAutopickFigureOfMerit"] = df["score"]
    out["rlnTomoTiltSeriesPixelSize"] = np.full(len(df), table.voxel_size_a)
    out["dsmParticleId"] = df["particle_id"]
    return write_file_atomic(path, lambda tmp: starfile.write(
        {"particles": pd.DataFrame(out)}, tmp, overwrite=True, float_format="%.10g"))


