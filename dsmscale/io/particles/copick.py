"""copick picks and projects.

A copick *project* is a JSON config (``config_type`` "filesystem", ``pickable_objects``, an
``overlay_root`` URL such as ``local:///data/overlay``) plus the overlay folder; picks live at
``ExperimentRuns/{run}/Picks/{user}_{session}_{object}.json``: ``points[].location`` ``{x, y, z}``
in Å from the centre of the tomogram's first voxel, rotations as 4×4 ``transformation_``
(RELION's matrix of the particle's angles, as copick's RELION import stores it), optional
``instance_id`` and ``score``. Tomograms live at
``ExperimentRuns/{run}/VoxelSpacing{spacing:.3f}/{type}.zarr`` (NGFF 0.4 on Zarr v2, which
copick reads). The run is the tomogram's name, the pickable object its class.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.particles.table import ANGLES, ParticleTable, checked, from_angstrom
from dsmscale.rotations import relion_angles, relion_matrices

#: The pixel size a table read from copick is expressed in: copick's Å, unchanged.
ANGSTROM_GRID = 1.0


def _picks_document(table: ParticleTable, rows: np.ndarray, run: str, obj: str, user_id: str,
                    session_id: str) -> dict:
    df = table.df.iloc[rows]
    loc_a = table.coordinates_a()[rows]
    oriented = set(ANGLES) <= set(df.columns)
    transforms = np.tile(np.eye(4), (len(df), 1, 1))
    if oriented:
        transforms[:, :3, :3] = relion_matrices(df[ANGLES].to_numpy(float))
    points = []
    for i in range(len(df)):
        z, y, x = loc_a[i]
        point = {"location": {"x": x, "y": y, "z": z}, "transformation_": transforms[i].tolist(),
                 "instance_id": int(df["particle_id"].iloc[i])}
        if "score" in df.columns:
            point["score"] = float(df["score"].iloc[i])
        points.append(point)
    return {"pickable_object_name": obj, "user_id": user_id, "session_id": session_id,
            "run_name": run, "voxel_spacing": None, "unit": "angstrom",
            "trust_orientation": oriented, "points": points}


def write_copick(table: ParticleTable, root: str | os.PathLike, user_id: str = "dsmscale",
                 session_id: str = "0") -> list[Path]:
    """Write copick picks under ``root`` (an overlay folder): one file per (tomogram, class)."""
    df = table.df
    classes = (df["class_name"].astype(str) if "class_name" in df.columns
               else pd.Series("particle", index=df.index))
    written = []
    for (run, obj), rows in df.groupby([df["tomogram"].astype(str), classes]).indices.items():
        doc = _picks_document(table, rows, run, obj, user_id, session_id)
        path = Path(root) / "ExperimentRuns" / run / "Picks" / f"{user_id}_{session_id}_{obj}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_file_atomic(path, lambda tmp, d=doc: Path(tmp).write_text(
            json.dumps(d))))
    return written


def write_copick_config(path: str | os.PathLike, objects: list[str], overlay_root: Path,
                        name: str = "dsmscale", radii_a: dict[str, float] | None = None) -> Path:
    """A copick project config naming the pickable objects (labels 1, 2, … in order) with a
    local overlay root."""
    radii_a = radii_a or {}
    config = {
        "config_type": "filesystem", "name": name, "version": "1.0.0",
        "description": "written by dsmscale",
        "pickable_objects": [{"name": obj, "is_particle": True, "label": i + 1,
                              "color": [int(c) for c in _colour(i)],
                              "radius": float(radii_a.get(obj, 50.0))}
                             for i, obj in enumerate(objects)],
        "overlay_root": f"local://{Path(overlay_root).resolve()}",
        "overlay_fs_args": {"auto_mkdir": True},
    }
    return write_file_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))


def _colour(i: int) -> tuple[int, int, int, int]:
    """A distinct RGBA colour for object ``i`` (copick's display colour)."""
    hue = (i * 0.618034) % 1.0
    r, g, b = (int(255 * (0.5 + 0.5 * np.cos(2 * np.pi * (hue + k / 3)))) for k in range(3))
    return r, g, b, 128


def read_copick(paths: list[str | os.PathLike] | str | os.PathLike,
                voxel_size_a: float | None = None) -> ParticleTable:
    """Read copick picks: files, overlay folders, or a project config (its overlay is searched).

    Positions are in Å; the table is in pixels of ``voxel_size_a`` when given, else of 1 Å
    (`ANGSTROM_GRID`), so no voxel size is needed to read them exactly."""
    files = _copick_files(paths)
    frames = [frame for path in files if len(frame := _read_picks_file(path))]
    if not frames:
        raise InputError(files[0], "holds no picks")
    df = pd.concat(frames, ignore_index=True)
    ids = df.pop("instance_id")
    zyx_a = df.pop("zyx_a")
    if df["score"].isna().all():
        df.pop("score")
    unique = ids.notna().all() and not ids.duplicated().any()
    grid = float(voxel_size_a or ANGSTROM_GRID)
    return checked(files[0], lambda: from_angstrom(
        np.stack(zyx_a.to_numpy()), grid, ids=ids.astype("int64") if unique else None,
        **{c: df[c].to_numpy() for c in df.columns}))


def _read_picks_file(path: Path) -> pd.DataFrame:
    """One picks file's points: tomogram, class, Å position, id, score and angles."""
    try:
        doc = json.loads(Path(path).read_text())
        points = doc["points"] or []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a copick picks file ({exc})") from exc
    zyx_a, matrices, rows = [], [], []
    for i, p in enumerate(points):
        loc = p.get("location") if isinstance(p, dict) else None
        if not isinstance(loc, dict) or not {"x", "y", "z"} <= set(loc):
            raise InputError(path, f"pick {i + 1} has no location with x, y and z")
        zyx_a.append(_pick_numbers(path, i, [loc["z"], loc["y"], loc["x"]], "location"))
        matrices.append(np.asarray(p.get("transformation_", np.eye(4)), dtype=float)[:3, :3])
        rows.append({"instance_id": p.get("instance_id"), "score": _pick_numbers(
            path, i, [p["score"]], "score")[0] if p.get("score") is not None else np.nan})
    frame = pd.DataFrame(rows, columns=["instance_id", "score"])
    frame.insert(0, "tomogram", str(doc.get("run_name") or _run_of(Path(path))))
    frame.insert(1, "class_name", str(doc.get("pickable_object_name", "particle")))
    frame["zyx_a"] = list(np.asarray(zyx_a, dtype=float).reshape(-1, 3))
    if doc.get("trust_orientation", True) and len(matrices):
        frame[ANGLES] = relion_angles(np.stack(matrices))
    return frame


def _run_of(path: Path) -> str:
    """The run of a picks file that names none: its folder in a copick project
    (``ExperimentRuns/RUN/Picks``), else — like any table without a tomogram column — its stem."""
    parts = path.parts
    if len(parts) >= 4 and parts[-2] == "Picks" and parts[-4] == "ExperimentRuns":
        return parts[-3]
    return path.stem


def _pick_numbers(path: Path, i: int, values: list, what: str) -> list[float]:
    """Pick ``i``'s ``what`` values as floats; anything else is an `InputError`."""
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"pick {i + 1} {what} holds {values!r}, not numbers") from exc


def overlay_root(config_path: Path) -> Path:
    """The local overlay folder a copick project config names (``local://`` or a path)."""
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(config_path, f"not a readable copick config ({exc})") from exc
    if config.get("config_type", "filesystem") != "filesystem":
        raise InputError(config_path, f"copick config_type {config.get('config_type')!r}: only "
                                      "local 'filesystem' projects are read (no network)")
    root = str(config.get("overlay_root") or "")
    if "://" in root and not root.startswith("local://"):
        raise InputError(config_path, f"overlay_root {root} is not local")
    folder = Path(root.removeprefix("local://"))
    folder = folder if folder.is_absolute() else config_path.parent / folder
    if not folder.is_dir():
        raise InputError(config_path, f"overlay_root {root} is not a folder here")
    return folder


def is_copick_config(path: Path) -> bool:
    """A copick project config: a JSON object with ``pickable_objects``."""
    try:
        return path.suffix == ".json" and "pickable_objects" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def _copick_files(paths) -> list[Path]:
    items = paths if isinstance(paths, list) else [paths]
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_file() and is_copick_config(item):
            item = overlay_root(item)
        if item.is_dir():
            files += sorted(item.glob("ExperimentRuns/*/Picks/*.json") if
                            (item / "ExperimentRuns").is_dir() else item.glob("**/Picks/*.json"))
        elif item.is_file():
            files.append(item)
        else:
            raise InputError(item, "does not exist")
    if not files:
        raise InputError(items[0], "holds no copick picks (ExperimentRuns/RUN/Picks/*.json)")
    return files


def is_copick(path: str | os.PathLike) -> bool:
    """copick picks (``.json``), a project config (``.json``) or an overlay folder."""
    return str(path).endswith(".json") or Path(path).is_dir()
