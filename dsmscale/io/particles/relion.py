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
from dsmscale.io.names import distinct_names
from dsmscale.io.particles.table import numbers
from dsmscale.rotations import normalise_relion_angles, relion_angles, relion_matrices

ANGLES = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
SUBTOMOGRAM_ANGLES = ["rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi"]
_GROUP_PIXEL_SIZES = ("rlnTomoTiltSeriesPixelSize",)
_OWN_PIXEL_SIZES = ("rlnTomoTiltSeriesPixelSize", "rlnPixelSize")
_OPTICS_PIXEL_SIZES = ("rlnMicrographPixelSize", "rlnImagePixelSize")


def _group_numbers(table: pd.DataFrame, path: Path, where: str) -> np.ndarray:
    """``rlnOpticsGroup`` of a table as whole numbers; anything else is an `InputError`."""
    groups = numbers(table, ["rlnOpticsGroup"], path)[:, 0]
    if not (np.isfinite(groups).all() and (groups % 1 == 0).all()):
        raise InputError(path, f"rlnOpticsGroup of {where} holds a value that is no whole number")
    return groups.astype(np.int64)


def _optics_values(df: pd.DataFrame, optics: pd.DataFrame | None, column: str,
                   path: Path) -> np.ndarray | None:
    """Each particle's value of an optics-group ``column`` (by ``rlnOpticsGroup``), or None."""
    if optics is None or column not in optics.columns:
        return None
    if "rlnOpticsGroup" not in optics.columns:
        raise InputError(path, "data_optics has no rlnOpticsGroup column")
    index = _group_numbers(optics, path, "data_optics")
    if len(set(index)) < len(index):
        raise InputError(path, "data_optics defines an optics group twice")
    by_group = pd.Series(numbers(optics, [column], path)[:, 0], index=index)
    if len(by_group) > 1 and "rlnOpticsGroup" not in df.columns:
        raise InputError(path, f"has {len(by_group)} optics groups but no rlnOpticsGroup column")
    groups = (_group_numbers(df, path, "the particles") if "rlnOpticsGroup" in df.columns
              else np.full(len(df), by_group.index[0]))
    unknown = sorted(set(groups) - set(by_group.index))
    if unknown:
        raise InputError(path, f"particles name optics group {unknown[0]}, which data_optics "
                               "does not define")
    return by_group.loc[groups].to_numpy(float)


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
    pixels = [f"rlnOrigin{a}" for a in "XYZ"]
    angst = shifts_a(path, df)
    if angst is not None:
        return angst / pixel_a[:, None]
    if set(pixels) <= set(df.columns):
        return turned(np.nan_to_num(numbers(df, pixels, path)), df, path)
    if any(c in df.columns for c in pixels):
        raise InputError(path, "holds origin shifts for some axes only")
    return np.zeros((len(df), 3))


def shifts_a(path: Path, df: pd.DataFrame) -> np.ndarray | None:
    """(n, 3) refined shifts ``rlnOrigin{X,Y,Z}Angst`` (x, y, z; Å), turned by the subtomogram
    orientation where there is one; None without them."""
    angst = [f"rlnOrigin{a}Angst" for a in "XYZ"]
    if not any(c in df.columns for c in angst):
        return None
    if not set(angst) <= set(df.columns):
        raise InputError(path, "holds origin shifts for some axes only")
    return turned(np.nan_to_num(numbers(df, angst, path)), df, path)


def turned(shifts: np.ndarray, df: pd.DataFrame, path: Path) -> np.ndarray:
    """Shifts (n, 3) turned by each particle's subtomogram orientation, as RELION does
    (``A_subtomogram · origin``); unchanged without one."""
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
    """(particles file, tomogram set) an ``optimisation_set.star`` names, or None for another
    kind of file. RELION writes the names relative to its project folder, Warp next to the set:
    each is looked for in the set's folder, then in the folders above it."""
    entries = next((b for b in blocks.values() if isinstance(b, dict)
                    and ("rlnTomoParticlesFile" in b or "rlnTomoTomogramsFile" in b)), None)
    if entries is None:
        return None
    if not entries.get("rlnTomoParticlesFile"):
        raise InputError(path, "is an optimisation set without particles "
                               "(no rlnTomoParticlesFile)")
    named = {key: _named_file(path, key, str(entries[key]))
             for key in ("rlnTomoParticlesFile", "rlnTomoTomogramsFile") if entries.get(key)}
    if named["rlnTomoParticlesFile"].resolve() == path.resolve():
        raise InputError(path, "names itself as its particles file")
    return named["rlnTomoParticlesFile"], named.get("rlnTomoTomogramsFile")


def _named_file(path: Path, key: str, name: str) -> Path:
    """The file an optimisation set names: next to it, or in a folder above it."""
    folders = [path.parent, *path.parent.resolve().parents]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise InputError(path, f"names {key} {name}, which is neither next to it nor in a folder "
                           f"above it")


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
    names = distinct_names(table["rlnTomoName"], path)
    if names.duplicated().any():
        raise InputError(path, f"names tomogram {names[names.duplicated()].iloc[0]!r} twice")
    return pd.DataFrame(values, columns=["size_x", "size_y", "size_z", "pixel_a"],
                        index=names.to_numpy())


def centred_positions_a(path: Path, df: pd.DataFrame, tomograms: pd.DataFrame,
                        centred_xyz_a: np.ndarray) -> tuple[np.ndarray, float]:
    """RELION 5 centred coordinates (Å from each tomogram's centre, x y z) as (n, 3) Å from voxel
    0's centre (z, y, x), and the tomograms' pixel size (Å; the smallest)."""
    if "rlnTomoName" not in df.columns:
        raise InputError(path, "holds centred coordinates but no rlnTomoName")
    names = distinct_names(df["rlnTomoName"], path)
    unknown = sorted(set(names) - set(tomograms.index))
    if unknown:
        raise InputError(path, f"names tomogram {unknown[0]!r}, which the tomogram set does "
                               f"not hold ({len(unknown)} such)")
    rows = tomograms.loc[names.to_numpy()]
    centre_a = rows[["size_x", "size_y", "size_z"]].to_numpy() / 2 * rows[["pixel_a"]].to_numpy()
    shift = shifts_a(path, df)
    shift = 0.0 if shift is None else shift
    return (centred_xyz_a - shift + centre_a)[:, ::-1], float(rows["pixel_a"].min())
