"""Particle tables: one typed table (`ParticleTable`), read from and written to RELION STAR,
copick picks JSON and CSV, chosen by the file name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from dsmscale.errors import InputError
from dsmscale.io.particles.copick import is_copick, read_copick, write_copick
from dsmscale.io.particles.csv import read_csv, write_csv
from dsmscale.io.particles.star import read_star, write_star
from dsmscale.io.particles.table import ANGLES, COORDS, ParticleTable, make_particles

__all__ = ["ANGLES", "COORDS", "ParticleTable", "check_one_tomogram", "is_copick",
           "make_particles", "output_format", "read_copick", "read_csv", "read_particles",
           "read_star", "write_copick", "write_csv", "write_particles", "write_star"]


def read_particles(
    path: str | os.PathLike, voxel_size_a: float | None = None,
    tomogram_shape_zyx: tuple[int, int, int] | None = None,
    tomogram_voxel_size_a: float | None = None,
) -> ParticleTable:
    """Read a particle table by suffix: ``.star``, ``.json`` (copick) or a copick root, ``.csv``.

    ``voxel_size_a`` is the pixel size of a table that does not record one; copick picks are in
    Å and are placed on a grid of ``voxel_size_a``, else of the tomogram's ``tomogram_voxel_size_a``
    (level 0). ``tomogram_shape_zyx`` (level 0) places RELION 5 centred coordinates."""
    path = Path(path)
    if path.suffix == ".star":
        table = read_star(path, voxel_size_a, tomogram_shape_zyx)
    elif path.suffix == ".csv":
        table = read_csv(path, voxel_size_a)
    elif is_copick(path):
        grid = voxel_size_a if voxel_size_a is not None else tomogram_voxel_size_a
        if grid is None:
            raise InputError(path, "copick picks are in Å: pass the tomogram voxel size")
        table = read_copick(path, grid)
    else:
        raise InputError(path, "unknown particle table format (use .star, .csv or copick .json)")
    if len(table) == 0:
        raise InputError(path, "particle table is empty")
    return table


def check_one_tomogram(table: ParticleTable, path: str | os.PathLike) -> ParticleTable:
    """``table`` (read from ``path``), checked to hold the particles of one tomogram: its
    coordinates are cut from one volume."""
    held = table.df["tomogram"].unique()
    if len(held) > 1:
        raise InputError(path, f"holds particles of {len(held)} tomograms ({', '.join(held[:3])}"
                         f"{', …' if len(held) > 3 else ''}): give one table per tomogram")
    return table



def write_particles(table: ParticleTable, path: str | os.PathLike, **kwargs) -> Path | list[Path]:
    """Write by `output_format`: ``.star`` (kwargs: style, tomogram_shape_zyx), ``.csv``, or a
    copick root folder."""
    path = Path(path)
    fmt = output_format(path)
    if fmt == "csv":
        return write_csv(table, path)
    return (write_star if fmt == "star" else write_copick)(table, path, **kwargs)


def output_format(path: str | os.PathLike) -> Literal["star", "csv", "copick"]:
    """The format `write_particles` writes to ``path``: by suffix, a copick root for a folder
    that exists or a name without a suffix."""
    path = Path(path)
    if path.suffix in (".star", ".csv"):
        return path.suffix[1:]  # type: ignore[return-value]
    if not path.suffix or path.is_dir():
        return "copick"
    raise InputError(path, f"unknown particle table format {path.suffix!r} (use .star, .csv, or "
                           "a copick project folder: one that exists, or a name without a suffix)")
