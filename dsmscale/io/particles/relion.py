"""RELION's conventions for where a particle is and how it is turned, in one place.

- Pixel size of ``rlnCoordinateX/Y/Z`` (`coordinate_pixel_sizes`), per particle, first found:
  in a WarpTools export (``data_general`` ``rlnTomoSubTomosAre2DStacks``), the optics group's
  ``rlnImagePixelSize`` (WarpTools writes positions / ``--output_angpix``:
  ``TiltSeries.ReconstructParticleSeries.cs``); the optics group's
  ``rlnTomoTiltSeriesPixelSize`` (RELION 4/5 tomography: 0-based pixels of the unbinned tilt
  series, ``particle_set.cpp``) or the particle's own; ``rlnPixelSize``;
  ``rlnDetectorPixelSize`` (µm) × 10⁴ / ``rlnMagnification`` (RELION 3.0, as RELION 3.1's
  ``star_converter.cpp`` converts it); the optics group's ``rlnMicrographPixelSize`` (RELION 3.1:
  coordinates are in micrograph pixels) or ``rlnImagePixelSize`` (or the particle's own). None
  of them: it must be given.
- Refined shifts (`shifts_px`): centre = coordinate − ``rlnOrigin{X,Y,Z}Angst`` / pixel size
  (RELION ≥ 3.1), or − ``rlnOrigin{X,Y,Z}`` (pixels, RELION 3.0); with a subtomogram orientation
  the shift is first turned by it (``A_subtomogram · origin``, ``ParticleSet::getPosition``).
- RELION 5 centred coordinates (`centred_positions_a`): Å from the tomogram's centre, which sits
  at ``size / 2`` (0-based) unbinned tilt-series pixels: ``rlnTomoSize{X,Y,Z}`` and
  ``rlnTomoTiltSeriesPixelSize`` of ``tomograms.star`` (``TomogramSet``, ``ParticleSet``).
- Orientation (`orientations`): ``rlnAngle{Rot,Tilt,Psi}``, composed with the subtomogram's
  ``rlnTomoSubtomogram{Rot,Tilt,Psi}`` where present as RELION does
  (``A = A_subtomogram · A_particle``, ``ParticleSet::getMatrix3x3``), as canonical angles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.errors import InputError
from dsmscale.io.names import tomogram_name
from dsmscale.io.particles.table import numbers
from dsmscale.rotations import normalise_relion_angles, relion_angles, relion_matrices

ANGLES = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
SUBTOMOGRAM_ANGLES = ["rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi"]
_GROUP_PIXEL_SIZES = ("rlnTomoTiltSeriesPixelSize",)
_OWN_PIXEL_SIZES = ("rlnTomoTiltSeriesPixelSize", "rlnPixelSize")
_OPTICS_PIXEL_SIZES = ("rlnMicrographPixelSize", "rlnImagePixelSize")


def _optics_values(df: pd.DataFrame, optics: pd.DataFrame | None, column: str,
                   path: Path) -> np.ndarray | None:
    """Each particle's value of an optics-group ``column`` (by ``rlnOpticsGroup``), or None."""
    if optics is None or column not in optics.columns:
        return None
    by_group = pd.Series(numbers(optics, [column], path)[:, 0],
                         index=optics["rlnOpticsGroup"].astype(int).to_numpy())
    groups = (df["rlnOpticsGroup"].astype(int) if "rlnOpticsGroup" in df.columns
              else pd.Series(np.full(len(df), by_group.index[0])))
    if len(by_group) > 1 and "rlnOpticsGroup" not in df.columns:
        raise InputError(path, f"has {len(by_group)} optics groups but no rlnOpticsGroup column")
    unknown = sorted(set(groups) - set(by_group.index))
    if unknown:
        raise InputError(path, f"particles name optics group {unknown[0]}, which data_optics "
                               "does not define")
    return by_group.loc[groups.to_numpy()].to_numpy(float)


def _recorded_pixel_sizes(path: Path, df: pd.DataFrame, optics: pd.DataFrame | None,
                          warp_export: bool) -> tuple[np.ndarray, str] | None:
    """The per-particle pixel size the file records and the column it came from, by the
    precedence of the module's docstring."""
    if warp_export:
        values = _optics_values(df, optics, "rlnImagePixelSize", path)
        if values is None:
            raise InputError(path, "is a WarpTools export (2D stacks) without the optics "
                                   "group's rlnImagePixelSize, its coordinates' pixel size")
        return values, "data_optics rlnImagePixelSize (WarpTools export)"
    for column in _GROUP_PIXEL_SIZES:
        values = _optics_values(df, optics, column, path)
        if values is not None:
            return values, f"data_optics {column}"
    for column in _OWN_PIXEL_SIZES:
        if column in df.columns:
            return numbers(df, [column], path)[:, 0], column
    if {"rlnDetectorPixelSize", "rlnMagnification"} <= set(df.columns):
        detector_um, magnification = numbers(
            df, ["rlnDetectorPixelSize", "rlnMagnification"], path).T
        return detector_um * 1e4 / magnification, "rlnDetectorPixelSize × 10⁴ / rlnMagnification"
    for column in _OPTICS_PIXEL_SIZES:  # the particle's own column first (RELION 3.0 style)
        if column in df.columns:
            return numbers(df, [column], path)[:, 0], column
        values = _optics_values(df, optics, column, path)
        if values is not None:
            return values, f"data_optics {column}"
    return None


def coordinate_pixel_sizes(path: Path, df: pd.DataFrame, optics: pd.DataFrame | None,
                           given: float | None, warp_export: bool = False) -> np.ndarray:
    """(n,) pixel size in Å of each particle's ``rlnCoordinate``; a given size must agree with a
    recorded one, and one of them must exist. ``warp_export``: the file is a WarpTools export."""
    recorded = _recorded_pixel_sizes(path, df, optics, warp_export)
    if recorded is None:
        if given is None:
            raise InputError(path, "records no pixel size for its coordinates (no optics "
                                   "group, rlnPixelSize or rlnDetectorPixelSize): pass the "
                                   "voxel size (Å, --voxel-size)")
        return np.full(len(df), float(given))
    sizes, column = recorded
    if not (np.isfinite(sizes).all() and (sizes > 0).all()):
        raise InputError(path, f"{column} holds a pixel size that is not positive")
    if given is not None and not np.allclose(sizes, given, rtol=1e-3):
        raise InputError(path, f"records pixel size {sizes[0]:g} Å ({column}) but "
                               f"{given:g} Å was given")
    return sizes


def shifts_px(path: Path, df: pd.DataFrame, pixel_a: np.ndarray) -> np.ndarray:
    """(n, 3) refined shifts (x, y, z) in pixels, to subtract from ``rlnCoordinate``."""
    angst = [f"rlnOrigin{a}Angst" for a in "XYZ"]
    pixels = [f"rlnOrigin{a}" for a in "XYZ"]
    if set(angst) <= set(df.columns):
        shifts = np.nan_to_num(numbers(df, angst, path)) / pixel_a[:, None]
    elif set(pixels) <= set(df.columns):
        shifts = np.nan_to_num(numbers(df, pixels, path))
    elif any(c in df.columns for c in angst + pixels):
        raise InputError(path, "holds origin shifts for some axes only")
    else:
        return np.zeros((len(df), 3))
    subtomogram = subtomogram_matrices(df, path)
    return shifts if subtomogram is None else np.einsum("nij,nj->ni", subtomogram, shifts)


def orientations(df: pd.DataFrame, path: Path) -> np.ndarray | None:
    """(n, 3) canonical ZYZ angles (rot, tilt, psi; deg), or None without ``rlnAngle*``."""
    if not set(ANGLES) <= set(df.columns):
        return None
    angles = numbers(df, ANGLES, path)
    if np.isnan(angles).any():
        raise InputError(path, "holds empty angle cells")
    subtomogram = subtomogram_matrices(df, path)
    if subtomogram is not None:
        return relion_angles(subtomogram @ relion_matrices(angles))
    return normalise_relion_angles(angles)


def subtomogram_matrices(df: pd.DataFrame, path: Path) -> np.ndarray | None:
    """(n, 3, 3) RELION matrices of ``rlnTomoSubtomogram{Rot,Tilt,Psi}``, or None."""
    if not set(SUBTOMOGRAM_ANGLES) <= set(df.columns):
        return None
    return relion_matrices(np.nan_to_num(numbers(df, SUBTOMOGRAM_ANGLES, path)))


def read_optimisation_set(path: Path, blocks: dict) -> tuple[Path, Path | None] | None:
    """(particles file, tomogram set) an ``optimisation_set.star`` names (relative to its own
    folder), or None for another kind of file; a named file that is missing is an error."""
    entries = next((b for b in blocks.values() if isinstance(b, dict)
                    and "rlnTomoParticlesFile" in b), None)
    if entries is None:
        if any(isinstance(b, dict) and "rlnTomoTomogramsFile" in b for b in blocks.values()):
            raise InputError(path, "is an optimisation set without particles "
                                   "(no rlnTomoParticlesFile)")
        return None
    named = {}
    for key in ("rlnTomoParticlesFile", "rlnTomoTomogramsFile"):
        if entries.get(key):
            file = path.parent / str(entries[key])
            if not file.is_file():
                raise InputError(path, f"names {key} {entries[key]}, which does not exist "
                                       f"next to it")
            named[key] = file
    return named["rlnTomoParticlesFile"], named.get("rlnTomoTomogramsFile")


def read_tomogram_set(path: Path, blocks: dict) -> pd.DataFrame:
    """A RELION 5 ``tomograms.star`` as a frame indexed by tomogram name: ``size_x/y/z`` (unbinned
    tilt-series pixels) and ``pixel_a`` (``rlnTomoTiltSeriesPixelSize``)."""
    needed = ["rlnTomoName", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ",
              "rlnTomoTiltSeriesPixelSize"]
    table = next((b for b in blocks.values() if isinstance(b, pd.DataFrame)
                  and "rlnTomoName" in b.columns), None)
    if table is None or not set(needed) <= set(table.columns):
        missing = needed if table is None else sorted(set(needed) - set(table.columns))
        raise InputError(path, f"is not a RELION 5 tomogram set: it lacks {', '.join(missing)}")
    values = numbers(table, needed[1:], path)
    return pd.DataFrame(values, columns=["size_x", "size_y", "size_z", "pixel_a"],
                        index=[tomogram_name(n) for n in table["rlnTomoName"].astype(str)])


def centred_positions_a(path: Path, df: pd.DataFrame, tomograms: pd.DataFrame,
                        centred_xyz_a: np.ndarray) -> tuple[np.ndarray, float]:
    """RELION 5 centred coordinates (Å from each tomogram's centre, x y z) as (n, 3) Å from voxel
    0's centre (z, y, x), and the tomograms' pixel size (Å; the smallest)."""
    if "rlnTomoName" not in df.columns:
        raise InputError(path, "holds centred coordinates but no rlnTomoName")
    names = df["rlnTomoName"].astype(str).map(tomogram_name)
    unknown = sorted(set(names) - set(tomograms.index))
    if unknown:
        raise InputError(path, f"names tomogram {unknown[0]!r}, which the tomogram set does "
                               f"not hold ({len(unknown)} such)")
    rows = tomograms.loc[names.to_numpy()]
    centre_a = rows[["size_x", "size_y", "size_z"]].to_numpy() / 2 * rows[["pixel_a"]].to_numpy()
    shifts = [f"rlnOrigin{a}Angst" for a in "XYZ"]
    shift_a = np.nan_to_num(numbers(df, shifts, path)) if set(shifts) <= set(df.columns) else 0.0
    return (centred_xyz_a - shift_a + centre_a)[:, ::-1], float(rows["pixel_a"].min())
