"""Synthetic tomograms of Gaussian blobs at known positions for the tests."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def random_separated_centres(
    shape: tuple[int, int, int], n: int, min_distance: float, margin: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Up to ``n`` random (z, y, x) centres in pixels, pairwise ≥ ``min_distance`` apart.

    Candidates are drawn in bulk and thinned greedily with a KD-tree, so this is fast for
    thousands of points.
    """
    lo = np.full(3, margin)
    hi = np.asarray(shape, dtype=float) - margin
    if np.any(hi <= lo):
        raise ValueError(f"margin {margin} leaves no room in shape {shape}")
    candidates = rng.uniform(lo, hi, size=(n * 4, 3))
    tree = cKDTree(candidates)
    keep = np.ones(len(candidates), dtype=bool)
    for i, j in sorted(tree.query_pairs(min_distance)):
        if keep[i] and keep[j]:
            keep[j] = False
    return candidates[keep][:n]


def blob_tomogram(
    shape: tuple[int, int, int], centres: np.ndarray, sigma_px: float, amplitude: float = 1.0,
    noise_std: float = 0.0, seed: int = 0,
) -> np.ndarray:
    """A (z, y, x) float32 volume with a Gaussian blob of ``sigma_px`` at each centre plus noise.

    Blobs are rendered in a local window of ±4σ, so cost grows with the number of blobs, not
    with the volume.
    """
    vol = np.zeros(shape, dtype=np.float32)
    half = int(np.ceil(4 * sigma_px))
    for c in np.asarray(centres, dtype=float):
        base = np.round(c).astype(int)
        lo = np.maximum(base - half, 0)
        hi = np.minimum(base + half + 1, shape)
        axes = [np.arange(lo[d], hi[d]) - c[d] for d in range(3)]
        g = [np.exp(-0.5 * (a / sigma_px) ** 2) for a in axes]
        vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += amplitude * (
            g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :])
    if noise_std > 0:
        rng = np.random.default_rng(seed)
        vol += rng.normal(0.0, noise_std, size=shape).astype(np.float32)
    return vol
