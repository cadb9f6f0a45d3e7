"""copick picks: ``points[].location`` ``{x, y, z}`` in Å from the tomogram origin, rotations as
4×4 ``transformation_``; files at ``ExperimentRuns/{run}/Picks/{user}_{session}_{object}.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.particles.table import (
    ANGLES,
    COORDS,
    ParticleTable,
    check_voxel_size,
    checked,
)
from dsmscale.rotations import euler_zyz, rotation_matrix_zyz


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
    return checked(files[0], lambda: ParticleTable(df, float(voxel_size_a)))


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


def is_copick(path: str | os.PathLike) -> bool:
    """A copick picks file (``.json``) or project root (a folder): coordinates in Å, so the
    tomogram's voxel size places them on its grid."""
    return str(path).endswith(".json") or Path(path).is_dir()
