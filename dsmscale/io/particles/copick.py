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


def _picks_document(df: pd.DataFrame, loc_a: np.ndarray, run: str, obj: str, user_id: str,
                    session_id: str) -> dict:
    """One picks file's JSON: the rows ``df`` (one run and object) at ``loc_a`` (n, 3; Å, z y x)."""
    oriented = set(ANGLES) <= set(df.columns)
    transforms = np.tile(np.eye(4), (len(df), 1, 1))
    if oriented:
        transforms[:, :3, :3] = relion_matrices(df[ANGLES].to_numpy(float))
    scores = df["score"].tolist() if "score" in df.columns else [None] * len(df)
    points = [{"location": {"x": x, "y": y, "z": z}, "transformation_": t,
               "instance_id": i} | ({} if score is None else {"score": score})
              for (z, y, x), t, i, score in zip(loc_a.tolist(), transforms.tolist(),
                                                 df["particle_id"].tolist(), scores, strict=True)]
    return {"pickable_object_name": obj, "user_id": user_id, "session_id": session_id,
            "run_name": run, "voxel_spacing": None, "unit": "angstrom",
            "trust_orientation": oriented, "points": points}


def write_copick(table: ParticleTable, root: str | os.PathLike, user_id: str = "dsmscale",
                 session_id: str = "0") -> list[Path]:
    """Write copick picks under ``root`` (an overlay folder): one file per (tomogram, class).
    This user's and session's earlier picks of the table's runs are removed first, so none is
    left there that the table does not hold."""
    df = table.df
    classes = (df["class_name"].astype(str) if "class_name" in df.columns
               else pd.Series("particle", index=df.index))
    loc_a = table.coordinates_a()
    for run in df["tomogram"].astype(str).unique():  # this user's earlier picks of these runs
        for old in Path(root).glob(f"ExperimentRuns/{run}/Picks/{user_id}_{session_id}_*.json"):
            old.unlink()
    written = []
    for (run, obj), rows in df.groupby([df["tomogram"].astype(str), classes]).indices.items():
        doc = _picks_document(df.iloc[rows], loc_a[rows], run, obj, user_id, session_id)
        path = Path(root) / "ExperimentRuns" / run / "Picks" / f"{user_id}_{session_id}_{obj}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_file_atomic(path, lambda tmp, d=doc: Path(tmp).write_text(
            json.dumps(d))))
    return written


def write_copick_config(path: str | os.PathLike, objects: list[str], overlay_root: Path,
                        name: str = "dsmscale") -> Path:
    """A copick project config naming the pickable objects (labels 1, 2, … in order; a nominal
    radius of 50 Å, which dsmscale does not know) with a local overlay root."""
    config = {
        "config_type": "filesystem", "name": name, "version": "1.0.0",
        "description": "written by dsmscale",
        "pickable_objects": [{"name": obj, "is_particle": True, "label": i + 1,
                              "color": [int(c) for c in _colour(i)],
                              "radius": 50.0}
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


def read_copick(path: str | os.PathLike) -> ParticleTable:
    """Read copick picks: a picks file, an overlay folder, or a project config (its overlay is
    searched); every user's and session's picks. Positions are in Å, so the table is in pixels
    of 1 Å (`ANGSTROM_GRID`): no voxel size is needed to read them exactly. Orientations are kept
    only where every file trusts them."""
    files = _copick_files(path)
    frames = [frame for file in files if len(frame := _read_picks_file(file))]
    if not frames:
        raise InputError(files[0], "holds no picks")
    df = pd.concat(frames, ignore_index=True, join="inner")
    ids = df.pop("instance_id")
    zyx_a = df.pop("zyx_a")
    if df["score"].isna().all():
        df.pop("score")
    unique = ids.notna().all() and not ids.duplicated().any()
    return checked(files[0], lambda: from_angstrom(
        np.stack(zyx_a.to_numpy()), ANGSTROM_GRID, ids=ids.astype("int64") if unique else None,
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
        matrices.append(_rotation(path, i, p.get("transformation_")))
        rows.append({"instance_id": _pick_id(path, i, p.get("instance_id")), "score": _pick_numbers(
            path, i, [p["score"]], "score")[0] if p.get("score") is not None else np.nan})
    frame = pd.DataFrame(rows, columns=["instance_id", "score"])
    frame.insert(0, "tomogram", str(doc.get("run_name") or _run_of(Path(path))))
    frame.insert(1, "class_name", str(doc.get("pickable_object_name", "particle")))
    frame["zyx_a"] = list(np.asarray(zyx_a, dtype=float).reshape(-1, 3))
    if doc.get("trust_orientation", True) and len(matrices):
        frame[ANGLES] = relion_angles(np.stack(matrices))
    return frame


def _rotation(path: Path, i: int, transform) -> np.ndarray:
    """The 3×3 rotation of pick ``i``'s ``transformation_`` (identity where it has none, as
    copick's default); a shift in it is not read: refused."""
    if transform is None:
        return np.eye(3)
    try:
        matrix = np.asarray(transform, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"pick {i + 1} transformation_ is not a 4×4 matrix") from exc
    if matrix.shape != (4, 4):
        raise InputError(path, f"pick {i + 1} transformation_ is {matrix.shape}, not 4×4")
    if np.abs(matrix[:3, 3]).max() > 1e-6:
        raise InputError(path, f"pick {i + 1} transformation_ holds a shift {matrix[:3, 3]}: "
                               "add it to the location (dsmscale does not guess its frame)")
    return matrix[:3, :3]


def _pick_id(path: Path, i: int, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value % 1:
        raise InputError(path, f"pick {i + 1} instance_id {value!r} is no whole number")
    return int(value)


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


def _copick_files(path: str | os.PathLike) -> list[Path]:
    """The picks files of a picks file, an overlay folder or a project config."""
    item = Path(path)
    if item.is_file() and is_copick_config(item):
        item = overlay_root(item)
    if item.is_file():
        return [item]
    if not item.is_dir():
        raise InputError(item, "does not exist")
    files = sorted(item.glob("ExperimentRuns/*/Picks/*.json") if (item / "ExperimentRuns").is_dir()
                   else item.glob("**/Picks/*.json"))
    if not files:
        raise InputError(path, "holds no copick picks (ExperimentRuns/RUN/Picks/*.json)")
    return files


def is_copick(path: str | os.PathLike) -> bool:
    """copick picks (``.json``), a project config (``.json``) or an overlay folder."""
    return str(path).endswith(".json") or Path(path).is_dir()
