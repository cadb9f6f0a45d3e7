"""Dataset folders: the boxes, targets and labels that ``dsmscale simulate`` writes and training
and evaluation read.

Layout of a dataset folder ``D``::

    D/subtomograms.zarr   float32 (N, B, B, B) noisy boxes, attribute ``voxel_size_a`` (Å)
    D/density.zarr        float32 (N, B, B, B) the target's density alone (Da per voxel)
    D/mask.zarr           uint8 (N, B, B, B) the target's mask (0 background, 1 target)
    D/particles.parquet   one row per box: index (into the arrays), split, class_name,
                          class_index, and what the writer adds (ids, centres, angles, ...);
                          ``has_targets`` False marks a box whose mask and density are not
                          known (all zeros), whose class alone is learnt (default True)

Splits are read whole into memory (`load_split`), as numpy arrays: boxes normalised per box
(`dsmscale.geometry.normalise_boxes`, as at inference), densities divided by ``density_scale``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from dsmscale.errors import InputError
from dsmscale.geometry import normalise_boxes
from dsmscale.io.subtomograms import create_box_array

#: The arrays of a dataset folder and their types, each indexed by the table's ``index``.
ARRAYS = {"subtomograms": "float32", "mask": "uint8", "density": "float32"}
#: The table of a dataset folder, and the columns training and evaluation read from it.
TABLE = "particles.parquet"
COLUMNS = ("index", "split", "class_name", "class_index")
#: Da/voxel that maps recovered densities to ~[0, 1] (the peak of a blurred MDa complex).
DENSITY_SCALE = 537.0


@dataclass
class Split:
    """One split in memory: ``boxes`` (n, B, B, B) float32 normalised per box, ``labels`` (n,)
    int64 class indexes (−1 for a class the model does not know), ``masks`` (n, B, B, B) uint8,
    ``densities`` (n, B, B, B) float32 divided by the density scale, ``has_targets`` (n,) bool
    (whether the mask and density are known), and the table's rows."""

    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    densities: np.ndarray
    table: pd.DataFrame
    has_targets: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def create_dataset_arrays(folder: Path, box: int, voxel_size_a: float) -> dict[str, zarr.Array]:
    """A new dataset folder's empty arrays (appended to as boxes are made)."""
    folder.mkdir(parents=True)
    return {name: create_box_array(folder / f"{name}.zarr", 0, box, dtype,
                                   attributes={"voxel_size_a": voxel_size_a})
            for name, dtype in ARRAYS.items()}


def open_dataset_array(dataset: str | os.PathLike, name: str) -> zarr.Array:
    """One of the folder's `ARRAYS`, read-only."""
    dataset = Path(dataset)
    try:
        return zarr.open_array(str(dataset / f"{name}.zarr"), mode="r")
    except FileNotFoundError as exc:
        raise InputError(dataset, f"not a dataset folder (no {name}.zarr)") from exc


def read_dataset_table(dataset: str | os.PathLike) -> pd.DataFrame:
    """The folder's table, checked to be readable and to hold `COLUMNS`."""
    path = Path(dataset) / TABLE
    if not path.is_file():
        raise InputError(dataset, f"not a dataset folder (no {TABLE})")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for broken files
        raise InputError(path, f"not a readable Parquet table ({str(exc).splitlines()[0]})"
                         ) from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"no column {', '.join(missing)}")
    return table


def dataset_classes(dataset: str | os.PathLike) -> list[str]:
    """Class names with training examples, in the order of their class index."""
    table = read_dataset_table(dataset)
    train = table[table["split"] == "train"]
    return list(train.sort_values("class_index")["class_name"].drop_duplicates())


def dataset_grid(dataset: str | os.PathLike) -> tuple[int, float]:
    """The box edge (voxels) and voxel size (Å) of a dataset's boxes, the latter recorded on its
    arrays."""
    array = open_dataset_array(dataset, "subtomograms")
    if "voxel_size_a" not in array.attrs:
        raise InputError(Path(dataset) / "subtomograms.zarr", "records no voxel_size_a (made by "
                         "an older dsmscale: simulate the dataset again)")
    return int(array.shape[-1]), float(array.attrs["voxel_size_a"])


def check_grid(dataset: str | os.PathLike, box: int, voxel_size_a: float,
               model: str | os.PathLike) -> None:
    """The dataset's boxes are ``box``³ voxels of ``voxel_size_a`` Å, as ``model`` was trained
    on; anything else is an `InputError`."""
    have_box, have_voxel_a = dataset_grid(dataset)
    if have_box != box or not math.isclose(have_voxel_a, voxel_size_a, rel_tol=1e-3):
        raise InputError(dataset, f"boxes of {have_box}³ voxels at {have_voxel_a:g} Å, but "
                         f"{model} was trained on {box}³ at {voxel_size_a:g} Å")


def load_split(dataset: str | os.PathLike, split: str | list[str], classes: list[str],
               limit: int | None = None, density_scale: float = DENSITY_SCALE) -> Split:
    """Load the rows of ``split`` (a name or a list, e.g. ["heldout"]) into memory, in index
    order; ``limit`` keeps a seeded random subset of that size. Rows whose class is not in
    ``classes`` get label −1 (e.g. held-out classes)."""
    return load_rows(dataset, split_rows(dataset, split, limit), classes, density_scale)


def split_rows(dataset: str | os.PathLike, split: str | list[str],
               limit: int | None = None) -> pd.DataFrame:
    """The table rows of ``split`` in index order (``limit``: a seeded random subset), without
    their boxes: `load_rows` reads those, all at once or block by block."""
    dataset = Path(dataset)
    table = read_dataset_table(dataset)
    rows = table[table["split"].isin([split] if isinstance(split, str) else split)]
    if limit is not None and limit < len(rows):  # a seeded random subset: rows are class-ordered
        rows = rows.sample(n=limit, random_state=0)
    rows = rows.sort_values("index")
    if rows.empty:
        raise InputError(dataset, f"split {split} has no rows")
    return rows.reset_index(drop=True)


def class_labels(rows: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Each row's class as its index in ``classes``; −1 for a class not among them."""
    lookup = {c: i for i, c in enumerate(classes)}
    return rows["class_name"].map(lambda c: lookup.get(c, -1)).to_numpy().astype(np.int64)


def load_rows(dataset: str | os.PathLike, rows: pd.DataFrame, classes: list[str],
              density_scale: float = DENSITY_SCALE) -> Split:
    """The boxes, masks and densities of ``rows`` (from `split_rows`) in memory."""
    dataset = Path(dataset)
    index = _box_index(rows, dataset)
    split = ", ".join(sorted(rows["split"].unique()))  # for error messages
    boxes = {name: _read_boxes(dataset, name, index, split) for name in ARRAYS}
    if not np.isin(boxes["mask"], (0, 1)).all():
        raise InputError(dataset / "mask.zarr", "holds values other than 0 (background) and 1 "
                                                "(target)")
    return Split(
        boxes=normalise_boxes(boxes["subtomograms"].astype(np.float32)),
        labels=class_labels(rows, classes),
        masks=boxes["mask"], densities=boxes["density"] / np.float32(density_scale),
        table=rows.reset_index(drop=True),
        has_targets=(np.array(rows["has_targets"], dtype=bool) if "has_targets" in rows.columns
                     else np.ones(len(rows), bool)))


def _box_index(rows: pd.DataFrame, dataset: Path) -> np.ndarray:
    """The rows' ``index`` column: whole numbers, as the arrays are indexed."""
    index = rows["index"].to_numpy()
    if not np.issubdtype(index.dtype, np.integer):
        raise InputError(dataset / TABLE, f"column index holds {index.dtype} values, not whole "
                                          "numbers")
    return index


def _read_boxes(dataset: Path, name: str, index: np.ndarray, split) -> np.ndarray:
    """Boxes ``index`` of ``name``.zarr, checked to exist and to be finite."""
    array = open_dataset_array(dataset, name)
    outside = index[(index < 0) | (index >= array.shape[0])]
    if len(outside):
        raise InputError(dataset / f"{name}.zarr", f"holds {array.shape[0]} boxes, but "
                         f"{TABLE} indexes box {outside[0]}")
    boxes = array.get_orthogonal_selection((index,))
    finite = np.isfinite(boxes.reshape(len(boxes), -1)).all(axis=1)
    if not finite.all():
        bad = int((~finite).sum())
        raise InputError(dataset / f"{name}.zarr", f"{bad} box{'es' * (bad != 1)} of split "
                         f"{split} hold{'s' * (bad == 1)} NaN/Inf voxels")
    return boxes
