"""Difference-of-Gaussians particle picking over an OME-Zarr tomogram.

Dask plans the work: the tomogram is cut into ~128³ blocks with a halo exchange
(``dask.array.overlap``, the mechanism under ``map_overlap``) deep enough for the wider Gaussian plus
``min_distance``. Each block returns its local maxima and the sums for global statistics in one
pass, so the tomogram is read once; a global greedy non-maximum suppression (KD-tree) then removes
duplicates across blocks. Scores are in units of the DoG response's
standard deviation over the whole tomogram.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import dask
import dask.array as da
import numpy as np
from pydantic import Field
from scipy import ndimage
from scipy.spatial import cKDTree

from dsmscale.config import JobConfig
from dsmscale.errors import InputError
from dsmscale.io.omezarr import Tomogram, open_tomogram
from dsmscale.io.particles import ParticleTable, make_particles

BLOCK = 128  # voxels per picking block edge: larger blocks waste less time on halos


class PickConfig(JobConfig):
    """DoG picker settings. Sigmas and distances are in nm, converted with the voxel size."""

    sigma_nm: float = Field(3.0, gt=0, description="inner Gaussian sigma (nm), ~ particle radius/√3")
    sigma_ratio: float = Field(1.6, gt=1, description="outer sigma / inner sigma")
    min_distance_nm: float = Field(8.0, gt=0, description="minimum distance between picks (nm)")
    threshold: float = Field(3.0, description="minimum DoG score, in standard deviations")
    top_k: int | None = Field(None, ge=1, description="keep at most this many best picks")
    polarity: Literal["dark", "bright"] = Field(
        "dark", description="particle contrast: cryo-ET protein is dark")
    level: int = Field(0, ge=0, description="pyramid level to pick on")


def _block_candidates(
    block: np.ndarray, core_start: tuple[int, ...], halo: int, s1: float, s2: float, sign: float,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """DoG of one haloed block: local maxima with positive response in the block's core.

    Returns (N×4 array of global z, y, x, response; [sum, sum of squares, count] of the core's
    response for the global statistics).
    """
    block = block.astype(np.float32, copy=False)
    dog = sign * (ndimage.gaussian_filter(block, s1) - ndimage.gaussian_filter(block, s2))
    is_max = ndimage.maximum_filter(dog, size=size, mode="nearest") == dog
    core = tuple(slice(halo, n - halo) for n in dog.shape)
    dog_core, max_core = dog[core], is_max[core]
    idx = np.argwhere(max_core & (dog_core > 0))
    points = np.column_stack([idx + np.asarray(core_start), dog_core[tuple(idx.T)]])
    stats = np.array([dog_core.sum(dtype=np.float64), np.square(dog_core, dtype=np.float64).sum(),
                      dog_core.size])
    return points, stats


def non_maximum_suppression(points: np.ndarray, scores: np.ndarray, min_distance: float) -> np.ndarray:
    """Indices of points kept by greedy NMS: best first, neighbours within ``min_distance`` drop."""
    order = np.argsort(-scores, kind="stable")
    tree = cKDTree(points)
    suppressed = np.zeros(len(points), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[tree.query_ball_point(points[i], min_distance)] = True
    return np.asarray(keep, dtype=np.int64)


def pick_particles(
    store: str | os.PathLike | Tomogram, config: PickConfig | None = None, name: str | None = None,
) -> ParticleTable:
    """Pick blob-like particles; returns a table in pixels of ``config.level`` with scores."""
    config = config or PickConfig()
    tomo = store if isinstance(store, Tomogram) else open_tomogram(store, config.level)
    px_nm = tomo.voxel_size_a / 10.0
    s1 = config.sigma_nm / px_nm
    s2 = s1 * config.sigma_ratio
    min_dist = config.min_distance_nm / px_nm
    sign = 1.0 if config.polarity == "bright" else -1.0
    blocks_per_axis = [math.ceil(n / BLOCK) for n in tomo.shape]
    arr = da.from_array(tomo.validated_voxels, chunks=tomo.chunks).rechunk(
        tuple(math.ceil(n / b) for n, b in zip(tomo.shape, blocks_per_axis, strict=True)))
    size = 2 * int(math.ceil(min_dist)) + 1
    halo = int(math.ceil(4 * s2)) + size // 2
    if halo > min(min(c) for c in arr.chunks):
        raise InputError(tomo.source, f"volume {tomo.shape} is too small for a picking halo of "
                                      f"{halo} px (reduce sigma_nm or min_distance_nm)")
    padded = da.overlap.overlap(arr, depth=halo, boundary="reflect")
    starts = [np.cumsum((0,) + c[:-1]) for c in arr.chunks]
    blocks = padded.to_delayed()
    tasks = [dask.delayed(_block_candidates)(blocks[i, j, k], (starts[0][i], starts[1][j], starts[2][k]),
                                             halo, s1, s2, sign, size)
             for i, j, k in np.ndindex(*blocks.shape)]
    results = dask.compute(*tasks, scheduler="threads")
    found = np.concatenate([r[0] for r in results]).reshape(-1, 4)
    total, total_sq, count = np.sum([r[1] for r in results], axis=0)
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 1e-30))
    found = found[(found[:, 3] - mean) / std >= config.threshold]
    keep = non_maximum_suppression(found[:, :3], found[:, 3], min_dist) if len(found) else []
    found = found[keep]
    if config.top_k is not None:
        found = found[: config.top_k]
    scores = (found[:, 3] - mean) / std if len(found) else np.empty(0)
    label = name or os.path.basename(str(tomo.source).rstrip("/")).removesuffix(".zarr")
    return make_particles(found[:, :3], label, tomo.voxel_size_a, level=config.level,
                          score=scores.astype(np.float64))
