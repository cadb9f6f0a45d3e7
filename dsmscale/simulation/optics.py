"""Microscope optics in Fourier space: the CTF (written once, here) and the detector MTF.

Units: spatial frequencies in 1/Å, defocus in µm (positive = underfocus), Cs in mm, voltage in
kV. The transfer function includes the sign that makes protein (positive density) dark.
"""

from __future__ import annotations

import math

import numpy as np


def electron_wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å (300 kV → 0.01969 Å)."""
    v = voltage_kv * 1e3
    return 12.2643 / math.sqrt(v * (1 + 0.97848e-6 * v))


def ctf_phase(k2: np.ndarray, defocus_um: float, voltage_kv: float, cs_mm: float) -> np.ndarray:
    """Phase aberration χ(k) = π λ Δf k² − (π/2) Cs λ³ k⁴ for squared frequencies ``k2`` (1/Å²)."""
    lam = electron_wavelength_a(voltage_kv)
    return (math.pi * lam * defocus_um * 1e4 * k2
            - 0.5 * math.pi * cs_mm * 1e7 * lam**3 * k2 * k2)


def ctf(
    k2: np.ndarray, defocus_um: float = 5.0, voltage_kv: float = 300.0, cs_mm: float = 2.0,
    amplitude_contrast: float = 0.07, b_factor_a2: float = 0.0,
) -> np.ndarray:
    """Contrast transfer −(√(1−A²) sin χ + A cos χ)·exp(−B k²/4); negative at k → 0 (dark
    protein)."""
    chi = ctf_phase(k2, defocus_um, voltage_kv, cs_mm)
    a = amplitude_contrast
    envelope = np.exp(-b_factor_a2 * k2 / 4.0)
    return -(math.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * envelope


def ctf_zeros(n: int, defocus_um: float, voltage_kv: float = 300.0, cs_mm: float = 2.0,
              amplitude_contrast: float = 0.0) -> np.ndarray:
    """The first ``n`` frequencies (1/Å) where the CTF vanishes: χ(k) = mπ − atan(A/√(1−A²))."""
    lam = electron_wavelength_a(voltage_kv)
    a = amplitude_contrast
    offset = math.atan2(a, math.sqrt(1 - a * a))
    zeros = []
    m = 0
    while len(zeros) < n:
        target = m * math.pi - offset
        m += 1
        if target <= 0:
            continue
        # solve (π/2) Cs λ³ q² − π λ Δf q + target = 0 for q = k², the smaller root
        qa, qb = 0.5 * math.pi * cs_mm * 1e7 * lam**3, -math.pi * lam * defocus_um * 1e4
        disc = qb * qb - 4 * qa * target
        if disc < 0:
            break
        zeros.append(math.sqrt((-qb - math.sqrt(disc)) / (2 * qa)))
    return np.asarray(zeros)


def mtf(fraction_of_nyquist: np.ndarray) -> np.ndarray:
    """Detector MTF ≈ sinc(πω/2) with ω the fraction of Nyquist (numpy's sinc is sin(πx)/(πx))."""
    return np.sinc(np.asarray(fraction_of_nyquist) / 2.0)


def frequency_grid_2d(shape: tuple[int, int], pixel_a: float) -> tuple[np.ndarray, np.ndarray]:
    """(k² in 1/Å², fraction of Nyquist) on an rfft2 grid of an image of ``shape``."""
    ky = np.fft.fftfreq(shape[0], d=pixel_a)[:, None]
    kx = np.fft.rfftfreq(shape[1], d=pixel_a)[None, :]
    k2 = ky * ky + kx * kx
    nyquist = 0.5 / pixel_a
    return k2, np.sqrt(k2) / nyquist
