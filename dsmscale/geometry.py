"""Box and pyramid geometry: the one definition of where a box starts, what lies inside a
volume, how a box is normalised, and where pyramid levels put their voxels.

Conventions: coordinates are (z, y, x) voxel indices of one pyramid level, 0-based, voxel centres
at integers. Level ``l`` is the 2×2×2 mean of level ``l − 1``, so its voxel 0 sits
``(2^l − 1) / 2`` level-0 voxels in (`level_offset`). A box of edge ``B`` around a centre ``c``
starts at ``round(c) − B // 2`` (round half up), so the centre voxel is index ``B // 2``.
"""

from __future__ import annotations

import numpy as np


def level_offset(level: int) -> float:
    """Where voxel 0 of pyramid ``level`` sits, in level-0 voxels: ``(2^level − 1) / 2``."""
    return (2.0**level - 1.0) / 2.0


def to_level(coords_px: np.ndarray, from_level: int, to: int) -> np.ndarray:
    """(n, 3) coordinates in voxels of pyramid level ``from_level`` re-expressed in voxels of
    level ``to``: ``p_to = (p_0 − offset(to)) / 2^to`` with ``p_0 = p · 2^from + offset(from)``."""
    level0 = np.asarray(coords_px, dtype=np.float64) * 2.0**from_level + level_offset(from_level)
    return (level0 - level_offset(to)) / 2.0**to


def pixels_to_angstrom(coords_px: np.ndarray, voxel_size_a: float | np.ndarray,
                       level: int) -> np.ndarray:
    """Voxel coordinates at pyramid ``level`` (voxel size ``voxel_size_a`` Å at that level, one
    or per axis z, y, x) in Å from the centre of voxel 0 of level 0."""
    return to_level(coords_px, level, 0) * (np.asarray(voxel_size_a, float) / 2.0**level)


#: Centres at most this many voxels outside a volume are rounding, not position: e.g. an MRC
#: header holds each axis's voxel size as cell / n in float32, so a centre on the edge, read
#: back through Å, can land a few 1e-6 voxels beyond it.
EDGE_TOLERANCE_PX = 1e-3


def centres_inside(coords_px: np.ndarray, shape_zyx, tolerance_px: float = 0.0) -> np.ndarray:
    """Which centres (n, 3) lie in a volume of ``shape_zyx``: within half a voxel (plus
    ``tolerance_px``) of its outermost voxel centres."""
    coords = np.asarray(coords_px, dtype=np.float64)
    return np.all((coords >= -0.5 - tolerance_px)
                  & (coords < np.asarray(shape_zyx) - 0.5 + tolerance_px), axis=1)


def onto_volume(coords_px: np.ndarray, shape_zyx) -> np.ndarray:
    """Centres (n, 3) moved onto the volume where they lie just outside it (`centres_inside`
    with `EDGE_TOLERANCE_PX`)."""
    high = np.nextafter(np.asarray(shape_zyx, np.float64) - 0.5, 0)
    return np.clip(np.asarray(coords_px, np.float64), -0.5, high)


def box_starts(centres_px: np.ndarray, box: int) -> np.ndarray:
    """Integer start index (n, 3) of the box of edge ``box`` around each centre."""
    return np.floor(np.asarray(centres_px) + 0.5).astype(np.int64) - box // 2


def boxes_inside(starts: np.ndarray, box: int, shape_zyx) -> np.ndarray:
    """Which boxes of edge ``box`` starting at ``starts`` (n, 3) lie wholly inside a volume."""
    return np.all((starts >= 0) & (starts + box <= np.asarray(shape_zyx)), axis=1)


def centres_in_box(centres_px: np.ndarray, box: int) -> np.ndarray:
    """(n, 3) centres relative to the start of the box cut around each (sub-voxel)."""
    centres = np.asarray(centres_px, dtype=np.float64)
    return centres - box_starts(centres, box)


def normalise_boxes(boxes: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation per box of an (n, B, B, B) array, in place (and
    returned): the model's input normalisation, for training data and inference alike."""
    flat = boxes.reshape(len(boxes), -1)
    mean = flat.mean(axis=1, keepdims=True)
    std = flat.std(axis=1, keepdims=True)
    flat -= mean
    flat /= np.where(std > 0, std, 1.0)
    return boxes
