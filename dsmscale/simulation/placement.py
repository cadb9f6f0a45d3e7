"""Crowded placement: random sequential addition of bounding spheres, no overlaps.

Molecules are placed largest first at uniform random positions (centres inside the volume) with
uniform random rotations (SO(3)); a candidate is rejected if its sphere intersects any placed
sphere. Overlap tests use a KD-tree of the placed centres (rebuilt every few hundred placements)
plus a brute-force check against the most recent ones, and candidates are drawn in batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from dsmscale.rotations import random_rotations


@dataclass(frozen=True)
class Placement:
    """Molecules in a volume: ``class_index`` (N,), ``centres`` (N, 3) in voxels (z, y, x),
    ``rotations`` (N, 3, 3) acting on (x, y, z) coordinates, ``radii`` (N,) in voxels."""

    class_index: np.ndarray
    centres: np.ndarray
    rotations: np.ndarray
    radii: np.ndarray

    def __len__(self) -> int:
        return len(self.class_index)

    def volume_fraction(self, shape: tuple[int, int, int]) -> float:
        return float((4 / 3 * np.pi * self.radii**3).sum() / np.prod(shape))


def place_crowded(
    shape: tuple[int, int, int], radii_by_class: np.ndarray, copies_by_class: np.ndarray,
    rng: np.random.Generator, attempts: int = 2000, batch: int = 64, rebuild_every: int = 256,
) -> Placement:
    """Place ``copies_by_class[c]`` spheres of ``radii_by_class[c]`` voxels, largest first.

    A molecule that finds no free spot after ``attempts`` candidates is dropped (the volume is
    jammed); the returned placement holds only the molecules placed.
    """
    radii_by_class = np.asarray(radii_by_class, float)
    order = np.repeat(np.arange(len(radii_by_class)), np.asarray(copies_by_class, int))
    order = order[np.argsort(-radii_by_class[order], kind="stable")]
    r_max = radii_by_class.max()
    hi = np.asarray(shape, float)
    centres = np.empty((len(order), 3))
    radii = np.empty(len(order))
    kept = np.zeros(len(order), bool)
    n, tree, n_tree = 0, None, 0
    for i, cls in enumerate(order):
        r = radii_by_class[cls]
        for _ in range(0, attempts, batch):
            # centres lie inside the volume: voxel centres span 0..n-1, so coordinates < n - 0.5
            cand = np.minimum(rng.uniform(0, hi, size=(batch, 3)), hi - 0.5 - 1e-6)
            ok = np.ones(batch, bool)
            if n > n_tree:  # recent placements, brute force
                d = np.linalg.norm(cand[:, None] - centres[n_tree:n][None], axis=-1)
                ok &= ~np.any(d < r + radii[n_tree:n][None], axis=1)
            if tree is not None:
                for j in np.flatnonzero(ok):
                    near = tree.query_ball_point(cand[j], r + r_max)
                    if near and np.any(np.linalg.norm(centres[near] - cand[j], axis=1)
                                       < r + radii[near]):
                        ok[j] = False
                    else:
                        break
            hits = np.flatnonzero(ok)
            if len(hits):
                centres[n], radii[n] = cand[hits[0]], r
                kept[i] = True
                n += 1
                break
        if n - n_tree >= rebuild_every:
            tree, n_tree = cKDTree(centres[:n]), n
    classes = order[kept]
    rotations = random_rotations(n, rng)
    return Placement(classes, centres[:n].copy(), rotations, radii[:n].copy())
