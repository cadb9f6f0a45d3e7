"""Boxes on a model's grid cut from a volume of another voxel size: the resampling math.

A model takes B³ boxes of voxel size ``v_m`` Å. From a volume whose voxels are ``v = (v_z, v_y,
v_x)`` Å (one pyramid level; anisotropic allowed), the box around a centre ``c`` (voxels of that
volume, sub-voxel) samples, per axis, the positions

    p_a = c + (a − B // 2) · s,   a = 0 … B − 1,   s = v_m / v

so the centre lands exactly on box index ``B // 2`` (`dsmscale.geometry.box_starts`, used when
no resampling is needed, rounds ``c`` to the nearest voxel instead). When every ``|s − 1|`` is
within `TOLERANCE` the volume is not resampled at all: boxes are cut as before, bit for bit.

Interpolation: Fourier resampling, in the cosine (DCT-II) basis of the window's mirror
extension — the interpolant is band-limited, as when a tomogram is binned or enlarged by
cropping or zero-padding its spectrum, and the mirror extension avoids the jump a periodic
window would have at its ends. Downsampling (s > 1) keeps only the frequencies below the
target grid's Nyquist (Fourier cropping: an ideal anti-alias filter); upsampling keeps every
frequency of the source (zero-padding). It is separable and the samples form a tensor grid, so
a box is three small matrix products with per-axis operators (B × n). Computed in float64,
returned as float32.

Why not a spline: the shipped model is sensitive to a box's high-frequency content, which a
cubic B-spline or trilinear interpolation smooths away; `jobs/bench_resampling.py` measures the
three on one tomogram (`results/resampling.md`).

Each box is resampled from a window of `window_size` source voxels per axis starting at
`window_starts`: the samples plus a margin of `margin` voxels each side, which bounds what the
window's truncation changes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Relative voxel-size difference below which a volume is taken as on the model's grid.
TOLERANCE = 1e-3


def resample_steps(source_voxel_zyx_a, target_voxel_a: float) -> np.ndarray:
    """Per-axis step ``s = target / source`` (source voxels per target voxel), (z, y, x)."""
    return float(target_voxel_a) / np.broadcast_to(np.asarray(source_voxel_zyx_a, float), (3,))


def needs_resampling(source_voxel_zyx_a, target_voxel_a: float,
                     tolerance: float = TOLERANCE) -> bool:
    """Whether any axis's voxel size differs from the target by more than ``tolerance``."""
    return bool(np.any(np.abs(resample_steps(source_voxel_zyx_a, target_voxel_a) - 1) > tolerance))


def nearest_level_below(level_voxels_zyx_a: list, target_voxel_a: float,
                        tolerance: float = TOLERANCE) -> int:
    """The coarsest pyramid level whose voxels are nowhere coarser than ``target_voxel_a``
    (within ``tolerance``); level 0 when even its voxels are coarser."""
    fine = [level for level, voxels in enumerate(level_voxels_zyx_a)
            if np.max(voxels) <= target_voxel_a * (1 + tolerance)]
    return max(fine) if fine else 0


def margin(steps: np.ndarray) -> np.ndarray:
    """Source voxels each side of the samples a box's window holds: about 6 target voxels
    (and at least 8 source voxels)."""
    return np.ceil(6 * np.maximum(np.asarray(steps, float), 1.0)).astype(np.int64) + 2


def sample_extent(centres: np.ndarray, box: int, steps: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """First and last sample position (n, 3) of each centre's box, in source voxels."""
    centres = np.asarray(centres, float).reshape(-1, 3)
    return centres - (box // 2) * steps, centres + (box - 1 - box // 2) * steps


def samples_inside(centres: np.ndarray, box: int, steps: np.ndarray, shape_zyx) -> np.ndarray:
    """Which boxes (n,) sample only inside the volume (its outermost voxel centres included)."""
    first, last = sample_extent(centres, box, steps)
    eps = 1e-9
    return np.all((first >= -eps) & (last <= np.asarray(shape_zyx) - 1 + eps), axis=1)


def window_size(box: int, steps: np.ndarray) -> np.ndarray:
    """Edge (3,) of the source window every box is resampled from."""
    return (np.ceil((box - 1) * np.asarray(steps, float)).astype(np.int64) + 2
            + 2 * margin(steps))


def window_starts(centres: np.ndarray, box: int, steps: np.ndarray) -> np.ndarray:
    """Integer start (n, 3) of each box's source window (may lie outside the volume)."""
    first, _ = sample_extent(centres, box, steps)
    return np.floor(first).astype(np.int64) - margin(steps)


def resample_window(window: np.ndarray, first: np.ndarray, box: int, steps: np.ndarray
                    ) -> np.ndarray:
    """The B³ box (float32) sampled from a source ``window`` (`window_size`) whose first
    sample sits at ``first`` (3,) window voxels (the centre − (B // 2)·s − window start).
    Values near the window's ends are not to be trusted; `window_starts` leaves a margin."""
    ops = [axis_operator(window.shape[k], float(first[k]), box, float(steps[k])) for k in range(3)]
    out = np.tensordot(ops[0], window, axes=(1, 0))              # (B, ny, nx)
    out = np.tensordot(out, ops[1], axes=(1, 1)).transpose(0, 2, 1)  # (B, B, nx)
    return np.tensordot(out, ops[2], axes=(2, 1)).astype(np.float32)


def axis_operator(n: int, first: float, box: int, step: float) -> np.ndarray:
    """(B, n) matrix taking a line of ``n`` source voxels to the ``box`` samples at
    ``first + a · step`` (window voxels): the line's DCT-II spectrum (orthonormal), cropped to
    the frequencies below the target Nyquist when ``step > 1``, evaluated at the samples."""
    positions = first + np.arange(box) * step
    if positions.min() < -0.5 or positions.max() > n - 0.5:
        raise ValueError(f"samples {positions.min():.2f}..{positions.max():.2f} lie outside "
                         f"a window of {n} voxels")
    kept = n if step <= 1 else max(1, int(np.floor(n / step)))
    return _cosines(positions, n, kept) @ _dct_matrix(n)[:kept]


def _cosines(positions: np.ndarray, n: int, kept: int) -> np.ndarray:
    """(len(positions), kept) orthonormal DCT-II basis functions of a line of ``n`` voxels,
    evaluated at (fractional) ``positions``."""
    k = np.arange(kept)
    norm = np.where(k == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    return norm * np.cos(np.pi * k * (positions[:, None] + 0.5) / n)


@lru_cache(maxsize=32)
def _dct_matrix(n: int) -> np.ndarray:
    """(n, n) orthonormal DCT-II of a line of ``n`` voxels (its rows: the basis at the voxels)."""
    out = _cosines(np.arange(n, dtype=float), n, n).T.copy()
    out.flags.writeable = False
    return out


def fourier_resize(volume: np.ndarray, shape_zyx) -> np.ndarray:
    """A whole ``volume`` resampled to ``shape_zyx`` by cropping or zero-padding its centred
    spectrum (as a tomogram is binned or enlarged in Fourier space): voxel 0 stays where it is,
    the voxel size scales by old / new extent per axis. Float32 out."""
    spectrum = np.fft.fftshift(np.fft.fftn(volume))
    out = np.zeros(shape_zyx, complex)
    src, dst = [], []
    for n, m in zip(volume.shape, shape_zyx, strict=True):
        k = min(n, m)
        src.append(slice(n // 2 - k // 2, n // 2 - k // 2 + k))
        dst.append(slice(m // 2 - k // 2, m // 2 - k // 2 + k))
    out[tuple(dst)] = spectrum[tuple(src)]
    return np.fft.ifftn(np.fft.ifftshift(out)).real.astype(np.float32)
