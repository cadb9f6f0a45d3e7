"""Particle tables: one typed table (`ParticleTable`), read from what real tools write (RELION
3.0–5 and Warp STAR, optimisation sets, copick picks and projects, Dynamo ``.tbl``, STOPGAP, CSV)
and written as RELION 5, RELION 3.1-style STAR, copick or CSV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from dsmscale.errors import InputError
from dsmscale.io.particles.copick import (
    is_copick,
    read_copick,
    write_copick,
    write_copick_config,
)
from dsmscale.io.particles.csv import read_csv, write_csv
from dsmscale.io.particles.motive_lists import read_dynamo
from dsmscale.io.particles.star import read_star, write_relion5, write_star
from dsmscale.io.particles.table import (
    ANGLES,
    COORDS,
    ParticleTable,
    check_voxel_size,
    concat_tables,
    make_particles,
)

__all__ = ["ANGLES", "COORDS", "FORMATS", "ParticleTable", "check_one_tomogram", "concat_tables",
           "is_copick",
           "make_particles", "output_format", "read_copick", "read_csv", "read_dynamo",
           "read_particles", "read_star", "write_copick", "write_copick_config", "write_csv",
           "write_particles", "write_relion5", "write_star"]

#: What `read_particles` reads, by file: the one-line help of ``--particles``.
FORMATS = ("RELION 3.0–5 / Warp .star (or an optimisation_set.star), copick picks .json, a "
           "copick project config .json or overlay folder, Dynamo .tbl, CSV with a header")

_NOT_READ = {".mod": "an IMOD model: export its points with IMOD's model2point and give a CSV "
                     "with a header",
             ".xml": "an XML object list (e.g. SHREC): not a format dsmscale reads",
             ".txt": "a plain-text list without named columns: give a CSV with a header"}


def read_particles(
    path: str | os.PathLike, voxel_size_a: float | None = None, class_column: str | None = None,
    tomogram_set: str | os.PathLike | None = None,
) -> ParticleTable:
    """Read a particle table by its file (see `FORMATS`).

    Args:
        path: the table.
        voxel_size_a: pixel size (Å) of coordinates in a file that records none (Dynamo,
            STOPGAP, CSV without ``voxel_size_a``); one the file records must agree with it.
        class_column: the column holding class labels (default: RELION's name and number
            columns; `dsmscale.io.particles.labels`).
        tomogram_set: RELION 5 ``tomograms.star`` for a particles file with centred
            coordinates (not needed with an optimisation set).

    Returns:
        The particles in pixels of their own pixel size (copick and Å tables: of 1 Å), shifts
        applied, angles normalised, tomograms named as `dsmscale.io.names.tomogram_name` says.
    """
    path = Path(path)
    if voxel_size_a is not None:
        check_voxel_size(voxel_size_a, path)
    suffix = path.suffix.lower()
    if suffix == ".star":
        table = read_star(path, voxel_size_a, class_column, tomogram_set)
    elif suffix == ".csv":
        table = read_csv(path, voxel_size_a, class_column)
    elif suffix == ".tbl":
        table = read_dynamo(path, voxel_size_a)
    elif is_copick(path):
        table = read_copick(path)
    elif suffix in _NOT_READ:
        raise InputError(path, f"is {_NOT_READ[suffix]}")
    else:
        raise InputError(path, f"unknown particle table format {path.suffix!r} ({FORMATS})")
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


def write_particles(table: ParticleTable, path: str | os.PathLike,
                    tomograms: dict[str, tuple[tuple[int, int, int], float]] | None = None
                    ) -> Path | list[Path]:
    """Write by `output_format`: ``.star`` (RELION 3.1 style), ``.csv``, a folder named
    ``*relion5`` (RELION 5: particles, tomograms and optimisation set; needs ``tomograms``,
    ``{name: (shape_zyx, voxel_size_a)}``), or a copick overlay folder."""
    path = Path(path)
    fmt = output_format(path)
    if fmt == "csv":
        return write_csv(table, path)
    if fmt == "star":
        return write_star(table, path)
    if fmt == "relion5":
        if tomograms is None:
            raise InputError(path, "a RELION 5 set needs each tomogram's shape and voxel size")
        return write_relion5(table, path, tomograms)
    return write_copick(table, path)


def output_format(path: str | os.PathLike) -> Literal["star", "csv", "relion5", "copick"]:
    """The format `write_particles` writes to ``path``: by suffix; a folder whose name ends in
    ``relion5`` is a RELION 5 set; another folder (one that exists, or a name without a suffix)
    a copick overlay."""
    path = Path(path)
    if path.suffix in (".star", ".csv"):
        return path.suffix[1:]  # type: ignore[return-value]
    if path.name.lower().endswith("relion5") and not path.suffix:
        return "relion5"
    if not path.suffix or path.is_dir():
        return "copick"
    raise InputError(path, f"unknown particle table format {path.suffix!r} (use .star, .csv, "
                           "a folder named *relion5, or a copick overlay folder)")
