"""Training/evaluation data: a dataset folder (see `dsmscale.simulate.dataset`) loaded per split.

Inputs are normalised per box (zero mean, unit variance, exactly as extraction with
``normalise=True`` does at inference); recovery targets are densities divided by
``density_scale`` (Da per voxel) so they are of order one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr

from dsmscale.checkpoints import model_grid
from dsmscale.errors import InputError
from dsmscale.extract import normalise_boxes

#: Da/voxel that maps recovered densities to ~[0, 1] (the peak of a blurred MDa complex).
DENSITY_SCALE = 537.0


@dataclass
class SplitData:
    """One split held in memory as tensors: x (n, 1, B, B, B), label (n,), mask (n, B, B, B)
    int64 (0 background, 1 target), density (n, 1, B, B, B) scaled, and the metadata rows."""

    x: torch.Tensor
    label: torch.Tensor
    mask: torch.Tensor
    density: torch.Tensor
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.label)

    def batch(self, idx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.x[idx], {"label": self.label[idx], "mask": self.mask[idx],
                             "density": self.density[idx]}


#: The 180° rotations of a (z, y, x) box that map the missing wedge of a tilt series about y onto
#: itself and keep the hand: identity, about z, about y, about x — given as the axes each flips.
WEDGE_ROTATIONS: tuple[tuple[int, ...], ...] = ((), (-2, -1), (-3, -1), (-3, -2))


def rotate_boxes_180(x: torch.Tensor, target: dict[str, torch.Tensor], choice: np.ndarray
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Training augmentation: box ``i`` and its mask and density rotated by
    ``WEDGE_ROTATIONS[choice[i]]`` (the last three axes of every tensor are z, y, x; labels are
    unchanged). The wedge stays where the simulator and real single-axis tilt series put it."""
    if len(choice) != len(x) or np.any((choice < 0) | (choice >= len(WEDGE_ROTATIONS))):
        raise ValueError(f"choice must hold {len(x)} values in 0..{len(WEDGE_ROTATIONS) - 1}")
    x, target = x.clone(), {k: v.clone() for k, v in target.items()}
    for r, axes in enumerate(WEDGE_ROTATIONS):
        picked = torch.from_numpy(np.flatnonzero(choice == r))
        if axes and len(picked):
            x[picked] = x[picked].flip(axes)
            for k in ("mask", "density"):
                target[k][picked] = target[k][picked].flip(axes)
    return x, target


def dataset_classes(dataset: str | os.PathLike) -> list[str]:
    """Class names with training examples, in the simulator's class order."""
    table = _table(Path(dataset))
    train = table[table["split"] == "train"]
    return list(train.sort_values("class_index")["class_name"].drop_duplicates())


#: The arrays of a dataset folder, each (N, B, B, B) and indexed by the table's ``index``.
ARRAYS = ("subtomograms", "mask", "density")
#: The columns of a dataset folder's particles.parquet that training and evaluation read.
COLUMNS = ("index", "split", "class_name", "class_index")


def dataset_grid(dataset: str | os.PathLike) -> tuple[int, float]:
    """The box edge (voxels) and voxel size (Å) of a dataset's boxes, the latter recorded by the
    simulator on its arrays."""
    array = _array(Path(dataset), "subtomograms")
    if "voxel_size_a" not in array.attrs:
        raise InputError(Path(dataset) / "subtomograms.zarr", "records no voxel_size_a (made by "
                         "an older dsmscale: simulate the dataset again)")
    return int(array.shape[-1]), float(array.attrs["voxel_size_a"])


def check_model_fits(ckpt: dict, checkpoint: str | os.PathLike,
                     dataset: str | os.PathLike) -> float:
    """Check that a checkpoint's network was trained on boxes of the dataset's edge and voxel
    size (`model_grid`); return the voxel size (Å)."""
    box, voxel_size_a = dataset_grid(dataset)
    trained_box, trained_voxel_a = model_grid(ckpt)
    if box != trained_box or not math.isclose(voxel_size_a, trained_voxel_a, rel_tol=1e-3):
        raise InputError(dataset, f"boxes of {box}³ voxels at {voxel_size_a:g} Å, but "
                         f"{checkpoint} was trained on {trained_box}³ at {trained_voxel_a:g} Å")
    return voxel_size_a


def _array(dataset: Path, name: str) -> zarr.Array:
    try:
        return zarr.open_array(str(dataset / f"{name}.zarr"), mode="r")
    except FileNotFoundError as exc:
        raise InputError(dataset, f"not a dataset folder (no {name}.zarr)") from exc


def _table(dataset: Path) -> pd.DataFrame:
    path = dataset / "particles.parquet"
    if not path.is_file():
        raise InputError(dataset, "not a dataset folder (no particles.parquet)")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for broken files
        raise InputError(path, f"not a readable Parquet table ({str(exc).splitlines()[0]})"
                         ) from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"no column {', '.join(missing)}")
    return table


def load_split(dataset: str | os.PathLike, split: str | list[str], classes: list[str],
               limit: int | None = None, density_scale: float = DENSITY_SCALE) -> SplitData:
    """Load the rows of ``split`` (a name or a list, e.g. ["heldout"]) into memory; ``limit``
    keeps a seeded random subset of that size.

    Rows whose class is not in ``classes`` get label -1 (e.g. held-out classes).
    """
    dataset = Path(dataset)
    table = _table(dataset)
    splits = [split] if isinstance(split, str) else split
    rows = table[table["split"].isin(splits)]
    if limit is not None and limit < len(rows):  # a seeded random subset: rows are class-ordered
        rows = rows.sample(n=limit, random_state=0)
    rows = rows.sort_values("index")
    if rows.empty:
        raise InputError(dataset, f"split {split} has no rows")
    index = _box_index(rows, dataset)
    boxes = {n: _read_boxes(dataset, n, index, split) for n in ARRAYS}
    if not np.isin(boxes["mask"], (0, 1)).all():
        raise InputError(dataset / "mask.zarr", "holds values other than 0 (background) and 1 "
                                                "(target)")
    lookup = {c: i for i, c in enumerate(classes)}
    labels = rows["class_name"].map(lambda c: lookup.get(c, -1)).to_numpy()
    return SplitData(
        x=torch.from_numpy(normalise_boxes(boxes["subtomograms"].astype(np.float32))[:, None]),
        label=torch.from_numpy(labels.astype(np.int64)),
        mask=torch.from_numpy(boxes["mask"].astype(np.int64)),
        density=torch.from_numpy(boxes["density"][:, None] / np.float32(density_scale)),
        table=rows.reset_index(drop=True),
    )


def _box_index(rows: pd.DataFrame, dataset: Path) -> np.ndarray:
    """The rows' ``index`` column: whole numbers, as the arrays are indexed."""
    index = rows["index"].to_numpy()
    if not np.issubdtype(index.dtype, np.integer):
        raise InputError(dataset / "particles.parquet", f"column index holds {index.dtype} "
                                                        "values, not whole numbers")
    return index


def _read_boxes(dataset: Path, name: str, index: np.ndarray, split) -> np.ndarray:
    """Boxes ``index`` of ``name``.zarr, checked to exist and to be finite."""
    array = _array(dataset, name)
    outside = index[(index < 0) | (index >= array.shape[0])]
    if len(outside):
        raise InputError(dataset / f"{name}.zarr", f"holds {array.shape[0]} boxes, but "
                         f"particles.parquet indexes box {outside[0]}")
    boxes = array.get_orthogonal_selection((index,))
    finite = np.isfinite(boxes.reshape(len(boxes), -1)).all(axis=1)
    if not finite.all():
        bad = int((~finite).sum())
        raise InputError(dataset / f"{name}.zarr", f"{bad} box{'es' * (bad != 1)} of split "
                         f"{split} hold{'s' * (bad == 1)} NaN/Inf voxels")
    return boxes
