"""Single-axis tilt series and weighted back-projection (WBP), tilt axis y.

With the tilt axis along y, every y row of the volume is an independent 2D (z, x) problem. One
sparse matrix ``A`` (n_tilts·n_u × n_z·n_x) with linear interpolation onto the detector projects
all rows at once (``A @ V`` with V of shape (n_z·n_x, n_y)); back-projection is ``Aᵀ``. The matrix
is built once per geometry.

Geometry: voxel (z, x) at coordinates relative to the volume centre projects to detector position
``u = x cos θ + z sin θ`` (+ detector centre). The detector is wide enough (``n_u ≥ n_x``) that
no ray through the volume is truncated at any tilt, so truncation streaks do not leak power into
the missing wedge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class TiltGeometry:
    """Tilt angles (degrees) about y for a volume of ``shape`` (z, y, x)."""

    shape: tuple[int, int, int]
    angles_deg: tuple[float, ...]

    @property
    def detector_width(self) -> int:
        """n_u: the widest projection of the (z, x) slab over all tilts, and at least n_x."""
        nz, _, nx = self.shape
        widths = [abs(nx * math.cos(math.radians(a))) + abs(nz * math.sin(math.radians(a)))
                  for a in self.angles_deg]
        return max(nx, int(math.ceil(max(widths))) + 2)

    @classmethod
    def symmetric(cls, shape, max_angle: float = 60.0, step: float = 2.0) -> TiltGeometry:
        return cls.from_range(shape, -max_angle, max_angle, step)

    @classmethod
    def from_range(cls, shape, min_angle: float, max_angle: float, step: float) -> TiltGeometry:
        """Tilts from ``min_angle`` to ``max_angle`` (deg, e.g. −50° to +70°) in ``step``s."""
        n = int(round((max_angle - min_angle) / step)) + 1
        return cls(tuple(int(s) for s in shape), tuple(np.linspace(min_angle, max_angle, n)))


@lru_cache(maxsize=4)
def projection_matrix(geometry: TiltGeometry) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(A, Aᵀ) in CSR, float32: A maps a (z, x) slice to all tilts' detector rows."""
    nz, _, nx = geometry.shape
    nu = geometry.detector_width
    zc = np.arange(nz) - (nz - 1) / 2
    xc = np.arange(nx) - (nx - 1) / 2
    z, x = np.meshgrid(zc, xc, indexing="ij")
    voxel = np.arange(nz * nx)
    rows, cols, vals = [], [], []
    for t, angle in enumerate(geometry.angles_deg):
        a = math.radians(angle)
        u = (x * math.cos(a) + z * math.sin(a)).ravel() + (nu - 1) / 2
        u0 = np.floor(u).astype(np.int64)
        w1 = (u - u0).astype(np.float32)
        for offset, weight in ((0, 1 - w1), (1, w1)):
            ui = u0 + offset
            keep = (ui >= 0) & (ui < nu) & (weight > 0)
            rows.append(t * nu + ui[keep])
            cols.append(voxel[keep])
            vals.append(weight[keep])
    a_mat = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(len(geometry.angles_deg) * nu, nz * nx), dtype=np.float32)
    return a_mat, a_mat.T.tocsr()


def project(volume: np.ndarray, geometry: TiltGeometry) -> np.ndarray:
    """Tilt series (n_tilts, n_y, n_u) of a (z, y, x) volume: line integrals in voxel units."""
    nz, ny, nx = volume.shape
    a_mat, _ = projection_matrix(geometry)
    flat = np.ascontiguousarray(volume.transpose(0, 2, 1)).reshape(nz * nx, ny)
    proj = a_mat @ flat
    return proj.reshape(len(geometry.angles_deg), geometry.detector_width, ny).transpose(0, 2, 1)


def ramp_filter(images: np.ndarray) -> np.ndarray:
    """Ramp |k| filter along the detector axis u (last axis), scaled for WBP."""
    n = images.shape[-1]
    ramp = np.abs(np.fft.rfftfreq(n)).astype(np.float32)
    ramp[0] = 0.25 / n  # keep a trace of the mean, as the discrete ramp's DC term
    return np.fft.irfft(np.fft.rfft(images, axis=-1) * ramp, n=n, axis=-1).astype(np.float32)


def back_project(images: np.ndarray, geometry: TiltGeometry, filtered: bool = True) -> np.ndarray:
    """Weighted back-projection of a tilt series (n_tilts, n_y, n_u) into a (z, y, x) volume."""
    nz, ny, nx = geometry.shape
    _, at_mat = projection_matrix(geometry)
    data = ramp_filter(images) if filtered else images
    step = math.radians(abs(geometry.angles_deg[1] - geometry.angles_deg[0])) if len(
        geometry.angles_deg) > 1 else 1.0
    flat = np.ascontiguousarray(data.transpose(0, 2, 1)).reshape(-1, ny)
    vol = (at_mat @ flat) * np.float32(step)
    return vol.reshape(nz, nx, ny).transpose(0, 2, 1)
