"""One typed particle table, read from and written to RELION STAR, copick picks JSON and CSV.

Conventions (stated once, used everywhere):
- Coordinates ``z, y, x`` are in **pixels of one pyramid level** of the tomogram (0-based voxel
  indices, voxel centres at integers); the table carries that level's voxel size in Å.
- Orientation, when present, is RELION's ZYZ Euler triple ``rot, tilt, psi`` in degrees.
- RELION 3.1 STAR: ``rlnCoordinateX/Y/Z`` in pixels (xyz order), ``rlnMicrographName`` or
  ``rlnTomoName`` names the tomogram.
- RELION 5 STAR: ``rlnCenteredCoordinateX/Y/ZAngst`` in Å relative to the tomogram centre, which
  RELION places at ``size / 2`` pixels; converting needs the tomogram shape and voxel size.
- copick picks JSON: ``points[].location`` ``{x, y, z}`` in Å from the tomogram origin.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import starfile

from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic

COORDS = ["z", "y", "x"]
ANGLES = ["rot", "tilt", "psi"]
StarStyle = Literal["relion3", "relion5"]


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
        """The same particles with coordinates in pixels of another pyramid level.

        Pyramid level ``l`` averages 2**l voxels, and its first voxel centre sits at
        ``(2**l - 1) / 2`` level-0 pixels, so ``p_l = (p_0 - (2**l - 1) / 2) / 2**l``.
        """
        if level == self.level:
            return self
        to_level0 = 2.0**self.level
        from_level0 = 2.0**level
        df = self.df.copy()
        p0 = df[COORDS].to_numpy() * to_level0 + (to_level0 - 1) / 2
        df[COORDS] = (p0 - (from_level0 - 1) / 2) / from_level0
        base_voxel = self.voxel_size_a / to_level0
        return replace(self, df=df, voxel_size_a=base_voxel * from_level0, level=level)

    def coordinates_a(self) -> np.ndarray:
        """(N, 3) coordinates in Å, (z, y, x), relative to the centre of voxel 0 of level 0."""
        return pixels_to_angstrom(self.df[COORDS].to_numpy(), self.voxel_size_a, self.level)


def pixels_to_angstrom(coords_px: np.ndarray, voxel_size_a: float, level: int) -> np.ndarray:
    """Pixel coordinates at pyramid ``level`` (voxel size ``voxel_size_a`` Å at that level) in Å
    from the centre of voxel 0 of level 0, whose own centre sits ``(2**level - 1) / 2`` level-0
    pixels in."""
    factor = 2.0**level
    return (np.asarray(coords_px, dtype=np.float64) * factor + (factor - 1) / 2) * (
        voxel_size_a / factor)


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


# ----------------------------------------------------------------------------------- STAR
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
    voxel_size_a = _pixel_size(path, voxel_size_a, _star_pixel_size(df, blocks.get("optics"), path))
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
    return _checked(path, lambda: make_particles(xyz[:, ::-1], tomo, voxel_size_a, ids=ids,
                                                 **extra))


def _pixel_size(path: Path, given: float | None, recorded: float | None) -> float:
    """The pixel size (Å) of a table's coordinates: the one it records, else the one given; the
    two disagreeing is an error (coordinates would be scaled wrongly without a sign)."""
    if given is not None and recorded is not None and not math.isclose(given, recorded,
                                                                        rel_tol=1e-3):
        raise InputError(path, f"records pixel size {recorded:g} Å but {given:g} Å was given")
    if recorded is None and given is None:
        raise InputError(path, "records no pixel size; pass the voxel size (Å)")
    return recorded if recorded is not None else given


def _star_pixel_size(df: pd.DataFrame, optics: pd.DataFrame | None, path: Path) -> float | None:
    for table in (df, optics):
        if table is None:
            continue
        for col in ("rlnTomoTiltSeriesPixelSize", "rlnImagePixelSize", "rlnDetectorPixelSize"):
            if col in table.columns:
                return float(numbers(table, [col], path)[0, 0])
    return None


def _checked(path, build):
    """Run a table constructor, re-raising its `InputError` with the file named."""
    try:
        return build()
    except InputError as exc:
        raise InputError(path, exc.problem) from exc


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


# --------------------------------------------------------------------------------- copick
def rotation_matrix_zyz(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's ZYZ Euler angles (deg) as a 3×3 rotation matrix acting on (x, y, z)."""
    a, b, g = np.deg2rad([rot, tilt, psi])

    def rz(t):
        return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])

    def ry(t):
        return np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])

    return rz(g) @ ry(b) @ rz(a)


def euler_zyz(matrix: np.ndarray) -> tuple[float, float, float]:
    """Inverse of `rotation_matrix_zyz` (deg)."""
    tilt = np.arccos(np.clip(matrix[2, 2], -1, 1))
    if np.sin(tilt) > 1e-8:
        rot = np.arctan2(matrix[2, 1], -matrix[2, 0])
        psi = np.arctan2(matrix[1, 2], matrix[0, 2])
    else:
        rot, psi = 0.0, np.arctan2(matrix[1, 0], matrix[0, 0])
        if matrix[2, 2] < 0:
            psi = np.arctan2(-matrix[1, 0], -matrix[0, 0])
    return tuple(float(v) for v in np.rad2deg([rot, tilt, psi]))


def write_copick(
    table: ParticleTable, root: str | os.PathLike, user_id: str = "dsmscale",
    session_id: str = "0",
) -> list[Path]:
    """Write copick picks: ``root/ExperimentRuns/{run}/Picks/{user}_{session}_{object}.json``.

    One file per (tomogram, class); locations in Å; rotations as 4×4 ``transformation_``.
    """
    df = table.df
    classes = df["class_name"] if "class_name" in df.columns else pd.Series(
        ["particle"] * len(df), index=df.index)
    loc_a = table.coordinates_a()
    written = []
    for (run, obj), idx in df.groupby([df["tomogram"], classes]).indices.items():
        points = []
        for i in idx:
            transform = np.eye(4)
            if set(ANGLES) <= set(df.columns):
                transform[:3, :3] = rotation_matrix_zyz(*df.iloc[i][ANGLES].to_numpy(float))
            z, y, x = loc_a[i]
            point = {"location": {"x": x, "y": y, "z": z}, "transformation_": transform.tolist(),
                     "instance_id": int(df["particle_id"].iloc[i])}
            if "score" in df.columns:
                point["score"] = float(df["score"].iloc[i])
            points.append(point)
        doc = {"pickable_object_name": str(obj), "user_id": user_id, "session_id": session_id,
               "run_name": str(run), "voxel_spacing": None, "unit": "angstrom",
               "trust_orientation": set(ANGLES) <= set(df.columns), "points": points}
        path = Path(root) / "ExperimentRuns" / str(run) / "Picks" / f"{user_id}_{session_id}_{obj}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_file_atomic(path, lambda tmp, d=doc: Path(tmp).write_text(json.dumps(d))))
    return written


def read_copick(paths: list[str | os.PathLike] | str | os.PathLike, voxel_size_a: float) -> ParticleTable:
    """Read copick picks JSON files (Å) into pixel coordinates at ``voxel_size_a``.

    ``paths`` may be files or a copick root, which is searched for ``*/Picks/*.json``.
    """
    files = _copick_files(paths)
    check_voxel_size(voxel_size_a, files[0])  # before the Å are divided by it
    rows = []
    for path in files:
        try:
            doc = json.loads(Path(path).read_text())
            points = doc["points"] or []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(path, f"not a copick picks file ({exc})") from exc
        for i, p in enumerate(points):
            loc = p.get("location") if isinstance(p, dict) else None
            if not isinstance(loc, dict) or not {"x", "y", "z"} <= set(loc):
                raise InputError(path, f"pick {i + 1} has no location with x, y and z")
            zyx_a = _pick_numbers(path, i, [loc["z"], loc["y"], loc["x"]], "location")
            row = {"tomogram": doc.get("run_name") or Path(path).parts[-3],
                   "class_name": doc.get("pickable_object_name", "particle"),
                   **dict(zip(COORDS, np.asarray(zyx_a) / voxel_size_a, strict=True)),
                   "instance_id": p.get("instance_id")}
            if "score" in p and p["score"] is not None:
                row["score"] = _pick_numbers(path, i, [p["score"]], "score")[0]
            if doc.get("trust_orientation") and p.get("transformation_") is not None:
                row.update(zip(ANGLES, euler_zyz(np.asarray(p["transformation_"])[:3, :3]),
                               strict=True))
            rows.append(row)
    if not rows:
        raise InputError(paths if not isinstance(paths, list) else files[0], "no picks found")
    df = pd.DataFrame(rows)
    ids = df.pop("instance_id")
    df.insert(0, "particle_id", ids.astype("int64") if ids.notna().all() and not ids.duplicated().any()
              else np.arange(len(df), dtype=np.int64))
    return _checked(files[0], lambda: ParticleTable(df, float(voxel_size_a)))


def _pick_numbers(path: Path, i: int, values: list, what: str) -> list[float]:
    """Pick ``i``'s ``what`` values as floats; anything else is an `InputError`."""
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"pick {i + 1} {what} holds {values!r}, not numbers") from exc


def _copick_files(paths) -> list[Path]:
    items = paths if isinstance(paths, list) else [paths]
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            files += sorted(item.glob("**/Picks/*.json"))
        elif item.is_file():
            files.append(item)
        else:
            raise InputError(item, "file does not exist")
    if not files:
        raise InputError(items[0], "no copick picks JSON files found")
    return files


# ------------------------------------------------------------------------------------ CSV
def write_csv(table: ParticleTable, path: str | os.PathLike) -> Path:
    """CSV with a header; the voxel size and level are stored as columns for a lossless read."""
    df = table.df.assign(voxel_size_a=table.voxel_size_a, level=table.level)
    return write_file_atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def read_csv(path: str | os.PathLike, voxel_size_a: float | None = None) -> ParticleTable:
    """Read a CSV with columns ``z, y, x`` (pixels) and optional ``particle_id``, ``tomogram``,
    angles, ``class_name``, ``score``, ``voxel_size_a`` and ``level``."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable CSV file ({str(exc).splitlines()[0]})") from exc
    if df.empty:
        raise InputError(path, "particle table is empty")
    level = _one_value(df, "level", path)
    if level is None:
        level = 0
    elif not (np.isfinite(level) and level >= 0 and level.is_integer()):
        raise InputError(path, f"column level holds {level:g}, not a pyramid level (0, 1, …)")
    file_vs = _one_value(df, "voxel_size_a", path)
    for column in [c for c in (*ANGLES, "score") if c in df.columns]:
        df[column] = numbers(df, [column], path)[:, 0]
    vs = _pixel_size(path, voxel_size_a, file_vs)
    if "particle_id" not in df.columns:
        df.insert(0, "particle_id", np.arange(len(df), dtype=np.int64))
    if "tomogram" not in df.columns:
        df["tomogram"] = path.stem
    df["tomogram"] = df["tomogram"].astype(str)
    if "class_name" in df.columns:
        df["class_name"] = df["class_name"].astype(str)
    return _checked(path, lambda: ParticleTable(df, vs, int(level)))


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


# ------------------------------------------------------------------------------- dispatch
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


def is_copick(path: str | os.PathLike) -> bool:
    """A copick picks file (``.json``) or project root (a folder): coordinates in Å, so the
    tomogram's voxel size places them on its grid."""
    return str(path).endswith(".json") or Path(path).is_dir()


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
