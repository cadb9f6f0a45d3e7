"""RELION STAR particle tables, as RELION 3.0, 3.1, 4 and 5, Warp/WarpTools and annotation
projects write them, read into the one particle table; and written back for RELION 3.1-era tools.

Reading, by what the file holds (conventions in `dsmscale.io.particles.relion`):

- ``rlnCoordinateX/Y/Z`` (pixels, x y z) with the pixel size of each particle
  (`coordinate_pixel_sizes`), minus the refined shift ``rlnOrigin{X,Y,Z}Angst`` (Å; RELION ≥ 3.1)
  or ``rlnOrigin{X,Y,Z}`` (pixels; RELION 3.0).
- ``rlnCenteredCoordinate{X,Y,Z}Angst`` (RELION 5; Å from the tomogram's centre), placed with the
  tomogram set (``tomograms.star``), which an ``optimisation_set.star`` names.
- Orientation ``rlnAngle{Rot,Tilt,Psi}``, composed with ``rlnTomoSubtomogram{Rot,Tilt,Psi}`` where
  present, normalised (real files hold angles such as 3,867°).
- Tomogram names from ``rlnTomoName`` or ``rlnMicrographName`` (`dsmscale.io.names.tomogram_name`:
  ``TS_01.tomostar`` → ``TS_01``); class labels per `dsmscale.io.particles.labels`; score from
  ``rlnAutopickFigureOfMerit`` or ``rlnLCCmax``.

A tomogram set, an optimisation set whose files are missing, an optics table or a 2D
(single-particle) table gets a one-line answer that says what the file is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from dsmscale.errors import InputError
from dsmscale.io.atomic import build_output_dir, write_file_atomic
from dsmscale.io.names import distinct_names
from dsmscale.io.particles.labels import class_labels, class_numbers
from dsmscale.io.particles.motive_lists import read_stopgap
from dsmscale.io.particles.relion import (
    centred_positions_a,
    coordinate_pixel_sizes,
    orientations,
    read_optimisation_set,
    read_tomogram_set,
    shifts_px,
)
from dsmscale.io.particles.table import COORDS, ParticleTable, checked, from_angstrom, numbers

XYZ = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
CENTRED = ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
           "rlnCenteredCoordinateZAngst"]
SCORE_COLUMNS = ("rlnAutopickFigureOfMerit", "rlnLCCmax")


def read_blocks(path: Path) -> dict:
    """The data blocks of a STAR file (`starfile.read`), a parse failure as an `InputError`."""
    try:
        return starfile.read(path, always_dict=True)
    except Exception as exc:  # noqa: BLE001 - starfile raises parser-specific errors
        raise InputError(path, f"not a readable STAR file ({str(exc).splitlines()[0]})") from exc


def read_star(
    path: str | os.PathLike, voxel_size_a: float | None = None, class_column: str | None = None,
    tomogram_set: str | os.PathLike | None = None,
) -> ParticleTable:
    """Read a RELION particle table (3.0 to 5, Warp exports, annotation sets) or an
    ``optimisation_set.star`` naming one.

    Args:
        path: the STAR file.
        voxel_size_a: pixel size (Å) of coordinates in a file that records none; a file that
            records one must agree.
        class_column: the column holding class labels (default: see `labels.CLASS_COLUMNS`).
        tomogram_set: RELION 5 ``tomograms.star``, for centred coordinates (an optimisation set
            names its own).

    Returns:
        The table in pixels of the coordinates' own pixel size (the smallest, where particles
        come at several), positions as refined (shifts applied).
    """
    path = Path(path)
    blocks = read_blocks(path)
    optimisation = read_optimisation_set(path, blocks)
    if optimisation is not None:
        particles, tomograms = optimisation
        return read_star(particles, voxel_size_a, class_column, tomograms or tomogram_set)
    if "stopgap_motivelist" in blocks:
        return read_stopgap(path, blocks["stopgap_motivelist"], voxel_size_a)
    df, optics = particle_block(path, blocks)
    zyx_a, pixel_a = positions_a(path, df, optics, voxel_size_a, tomogram_set,
                                 warp_export=is_warp_export(blocks))
    columns = {"tomogram": _tomogram_names(df, path)}
    angles = orientations(df, path)
    if angles is not None:
        columns.update(rot=angles[:, 0], tilt=angles[:, 1], psi=angles[:, 2])
    labels = class_labels(df, class_column, path)
    if labels is not None:
        columns["class_name"] = labels
    score = next((c for c in SCORE_COLUMNS if c in df.columns), None)
    if score:
        columns["score"] = numbers(df, [score], path)[:, 0]
    return checked(path, lambda: from_angstrom(zyx_a, pixel_a, ids=_particle_ids(df), **columns))


def particle_block(path: Path, blocks: dict) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The particles' rows and the optics table; a file holding no 3D particles is an
    `InputError` saying what it holds instead."""
    tables = {name: b for name, b in blocks.items() if isinstance(b, pd.DataFrame) and not b.empty}
    df = tables.get("particles")
    if df is None:
        df = next((b for b in tables.values() if {*XYZ[:2]} <= set(b.columns)
                   or set(CENTRED) <= set(b.columns)), None)
    if df is None:
        if any("rlnTomoSizeX" in b.columns for b in tables.values()):
            raise InputError(path, "is a RELION tomogram set (tomograms.star), not a particle "
                                   "table: give the particles file or the optimisation set")
        if "optics" in tables:
            raise InputError(path, "holds an optics table but no particles")
        raise InputError(path, "holds no particle rows (no rlnCoordinateX/Y/Z or "
                               "rlnCenteredCoordinateX/Y/ZAngst columns)")
    if set(XYZ[:2]) <= set(df.columns) and XYZ[2] not in df.columns:
        raise InputError(path, "holds 2D coordinates (rlnCoordinateX/Y, no Z): a single-particle "
                               "table, not particles in a tomogram")
    return df, tables.get("optics")


def is_warp_export(blocks: dict) -> bool:
    """A WarpTools particle export: ``data_general`` says its subtomograms are 2D stacks (RELION 5
    itself writes centred coordinates instead)."""
    general = blocks.get("general")
    return (isinstance(general, dict | pd.DataFrame)
            and "rlnTomoSubTomosAre2DStacks" in (general if isinstance(general, dict)
                                                 else general.columns))


def positions_a(path: Path, df: pd.DataFrame, optics: pd.DataFrame | None,
                voxel_size_a: float | None, tomogram_set,
                warp_export: bool = False) -> tuple[np.ndarray, float]:
    """(n, 3) particle centres in Å (z, y, x, from voxel 0's centre) and the pixel size (Å) to
    express them in."""
    if set(XYZ) <= set(df.columns):
        pixel_a = coordinate_pixel_sizes(path, df, optics, voxel_size_a, warp_export)
        xyz_px = numbers(df, XYZ, path) - shifts_px(path, df, pixel_a)
        return (xyz_px * pixel_a[:, None])[:, ::-1], float(pixel_a.min())
    if set(CENTRED) <= set(df.columns):
        if tomogram_set is None:
            raise InputError(path, "holds RELION 5 centred coordinates (Å from each tomogram's "
                                   "centre): give its optimisation_set.star, or the tomogram set "
                                   "(tomograms.star) with its sizes and pixel sizes")
        tomograms = read_tomogram_set(Path(tomogram_set), read_blocks(Path(tomogram_set)))
        return centred_positions_a(path, df, tomograms, numbers(df, CENTRED, path))
    raise InputError(path, "has no coordinate columns (rlnCoordinateX/Y/Z or "
                           "rlnCenteredCoordinateX/Y/ZAngst)")


def _tomogram_names(df: pd.DataFrame, path: Path) -> np.ndarray | str:
    column = next((c for c in ("rlnTomoName", "rlnMicrographName") if c in df.columns), None)
    return path.stem if column is None else distinct_names(df[column], path).to_numpy()


def _particle_ids(df: pd.DataFrame) -> np.ndarray | None:
    """Ids a table carries when they are unique (``rlnTomoParticleId`` counts per tomogram in
    Warp exports, so often they are not): else None, and rows are numbered."""
    for column in ("dsmParticleId", "rlnTomoParticleId"):
        if column in df.columns and not df[column].duplicated().any():
            ids = pd.to_numeric(df[column], errors="coerce")
            if ids.notna().all() and (ids % 1 == 0).all():
                return ids.to_numpy(np.int64)
    return None


def relion_columns(table: ParticleTable) -> dict[str, np.ndarray]:
    """The columns every STAR writer writes: tomogram, orientation, class (number and name),
    score and particle id (``rlnTomoParticleId``)."""
    df = table.df
    out = {"rlnTomoName": df["tomogram"].astype(str).to_numpy()}
    if {"rot", "tilt", "psi"} <= set(df.columns):
        out.update(rlnAngleRot=df["rot"].to_numpy(), rlnAngleTilt=df["tilt"].to_numpy(),
                   rlnAnglePsi=df["psi"].to_numpy())
    if "class_name" in df.columns:
        out["rlnClassNumber"] = class_numbers(df["class_name"])
        out["rlnParticleName"] = df["class_name"].astype(str).to_numpy()
    if "score" in df.columns:
        out["rlnAutopickFigureOfMerit"] = df["score"].to_numpy()
    out["rlnTomoParticleId"] = df["particle_id"].to_numpy()
    return out


def write_star(table: ParticleTable, path: str | os.PathLike) -> Path:
    """A RELION 3.1-style table for older pipelines: ``data_optics`` (one group; its
    ``rlnImagePixelSize`` and ``rlnTomoTiltSeriesPixelSize`` are the coordinates' pixel size) and
    ``data_particles`` with ``rlnCoordinateX/Y/Z`` in pixels of level 0 (x y z), the tomogram as
    ``rlnTomoName`` and ``rlnMicrographName``, and `relion_columns`."""
    table = table.at_level(0)
    xyz = table.df[COORDS[::-1]].to_numpy()
    names = table.df["tomogram"].astype(str).to_numpy()
    particles = {"rlnMicrographName": names,
                 **dict(zip(XYZ, xyz.T, strict=True)), **relion_columns(table),
                 "rlnOpticsGroup": np.ones(len(xyz), np.int64)}
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnImagePixelSize": [table.voxel_size_a],
                           "rlnTomoTiltSeriesPixelSize": [table.voxel_size_a],
                           "rlnImageDimensionality": [3]})
    return write_file_atomic(path, lambda tmp: starfile.write(
        {"optics": optics, "particles": pd.DataFrame(particles)}, tmp, overwrite=True,
        float_format="%.10g"))


def write_relion5(table: ParticleTable, folder: str | os.PathLike,
                  tomograms: dict[str, tuple[tuple[int, int, int], float]]) -> list[Path]:
    """A RELION 5 particle set, the folder ``folder`` built whole or not at all:
    ``particles.star`` (``rlnCenteredCoordinate*Angst``, Å from each tomogram's centre at
    ``size / 2``; an optics group per pixel size in ``data_optics``), ``tomograms.star``
    (``rlnTomoSize{X,Y,Z}`` and ``rlnTomoTiltSeriesPixelSize``: each tomogram's level-0 shape and
    voxel size, binning 1) and ``optimisation_set.star`` naming both. Voltage, Cs and amplitude
    contrast are not known here: pair the particles with the RELION project's own
    ``tomograms.star`` to extract or refine.

    Args:
        tomograms: ``{name: (shape_zyx, voxel_size_a)}`` of every tomogram the table names.
    """
    names = table.df["tomogram"].astype(str)
    missing = sorted(set(names) - set(tomograms))
    if missing:
        raise InputError(folder, f"no tomogram shape and voxel size for {missing[0]!r}")
    shape_xyz = np.array([tomograms[n][0][::-1] for n in names], dtype=float)
    pixel = np.array([tomograms[n][1] for n in names], dtype=float)
    centred = table.coordinates_a()[:, ::-1] - shape_xyz / 2 * pixel[:, None]
    sizes = sorted(set(pixel))
    groups = np.searchsorted(sizes, pixel) + 1
    optics = pd.DataFrame({"rlnOpticsGroup": np.arange(1, len(sizes) + 1),
                           "rlnOpticsGroupName": [f"opticsGroup{i + 1}" for i in range(len(sizes))],
                           "rlnTomoTiltSeriesPixelSize": sizes})
    particles = {**dict(zip(CENTRED, centred.T, strict=True)), **relion_columns(table),
                 "rlnOpticsGroup": groups}
    used = sorted(set(names))
    tomogram_set = pd.DataFrame({
        "rlnTomoName": used,
        **{f"rlnTomoSize{a}": [int(tomograms[n][0][2 - i]) for n in used]
           for i, a in enumerate("XYZ")},
        "rlnTomoTiltSeriesPixelSize": [float(tomograms[n][1]) for n in used],
        "rlnTomoTomogramBinning": [1.0] * len(used)})
    files = {"particles.star": {"optics": optics, "particles": pd.DataFrame(particles)},
             "tomograms.star": {"global": tomogram_set},
             "optimisation_set.star": {"": {"rlnTomoParticlesFile": "particles.star",
                                            "rlnTomoTomogramsFile": "tomograms.star"}}}

    def build(tmp: Path) -> None:
        tmp.mkdir()
        for name, blocks in files.items():
            starfile.write(blocks, tmp / name, overwrite=True, float_format="%.10g")

    folder = build_output_dir(folder, overwrite=True, build=build)
    return [folder / name for name in files]
