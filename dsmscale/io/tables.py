"""``dsmscale particles``: particle tables from one tool's format into another's (RELION 5, RELION
3.1-style STAR, a copick project, CSV), through the one particle table, positions kept in Å."""

from __future__ import annotations

import os
from pathlib import Path

from dsmscale.errors import InputError
from dsmscale.io.copick_project import write_copick_project
from dsmscale.io.mrc import open_volume
from dsmscale.io.names import by_stem, is_mrc
from dsmscale.io.omezarr import open_tomogram
from dsmscale.io.particles import concat_tables, output_format, read_particles, write_particles


def tomogram_geometry(paths: list[str]) -> dict[str, tuple[tuple[int, int, int], float]]:
    """``{name: (shape_zyx, voxel_size_a)}`` of tomograms (MRC headers or OME-Zarr level 0),
    named by file stem, for writers that place positions relative to a tomogram (RELION 5)."""
    geometry = {}
    for name, path in by_stem(paths, "tomogram").items():
        if is_mrc(path):
            with open_volume(path) as volume:
                geometry[name] = (volume.shape, volume.voxel_size_a)
        else:
            tomogram = open_tomogram(path, 0)
            geometry[name] = (tomogram.shape, tomogram.voxel_size_a)
    return geometry


def convert_particles(
    inputs: list[str | os.PathLike], output: str | os.PathLike, tomograms: list[str] = (),
    **read_options,
) -> list[Path]:
    """Read ``inputs`` (merged) and write them to ``output`` in the format its name says
    (`dsmscale.io.particles.output_format`). RELION 5 needs ``tomograms`` (their shapes and voxel
    sizes place the centred coordinates); a copick project copies ``tomograms`` (OME-Zarr) into
    its layout. Returns the files written."""
    table = concat_tables([read_particles(path, **read_options) for path in inputs])
    fmt = output_format(output)
    Path(output).parent.mkdir(parents=True, exist_ok=True)  # once there is something to write
    if fmt == "copick":
        stores = by_stem(list(tomograms), "tomogram")
        mrc = next((path for path in stores.values() if is_mrc(path)), None)
        if mrc:
            raise InputError(mrc, "a copick project takes OME-Zarr tomograms: convert it first "
                                  "(dsmscale convert)")
        return [write_copick_project(table, output, stores)]
    geometry = tomogram_geometry(list(tomograms)) if tomograms else None
    if fmt == "relion5" and not geometry:
        raise InputError(output, "RELION 5 centred coordinates need each tomogram's size: give "
                                 "the tomograms (--tomograms)")
    written = write_particles(table, output, tomograms=geometry)
    return written if isinstance(written, list) else [written]
