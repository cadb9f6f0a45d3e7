"""Fourier-space fast path: a clean box × missing wedge × CTF × MTF plus coloured noise.

An approximation for unit tests and training augmentation (~ms per 40³ box): it has a genuine
missing wedge and CTF zeros, but no tilt-series streaks, no neighbours outside the box and not
the noise texture of a real weighted back-projection. The benchmark datasets use the tilt-series
path (`dsmscale.simulation.tomogram`).
"""

from __future__ import annotations

import math

import numpy as np

from dsmscale.simulation.optics import ctf, mtf


def wedge_mask(shape: tuple[int, int, int], tilt_max_deg: float = 60.0) -> np.ndarray:
    """Boolean mask on the full FFT grid of a (z, y, x) box: True where a tilt series about y
    samples Fourier space (|kz| ≤ tan(θmax)·|kx|); the DC term is kept."""
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    kx = np.fft.fftfreq(shape[2])[None, None, :]
    sampled = np.abs(kz) <= math.tan(math.radians(tilt_max_deg)) * np.abs(kx) + 1e-12
    return np.broadcast_to(sampled, shape).copy()


def fast_subtomogram(
    clean: np.ndarray, snr: float, rng: np.random.Generator, voxel_size_a: float = 10.0,
    tilt_max_deg: float = 60.0, defocus_um: float = 5.0, voltage_kv: float = 300.0,
    cs_mm: float = 2.0, amplitude_contrast: float = 0.07, b_factor_a2: float = 100.0,
) -> np.ndarray:
    """Noisy subtomogram from a clean (z, y, x) density box at signal-to-noise ``snr``.

    Signal = F⁻¹(wedge · CTF · MTF · F(clean)); noise = white noise through the same wedge and
    MTF, scaled so that var(signal) / var(noise) = ``snr``.
    """
    if clean.ndim != 3:
        raise ValueError(f"clean box must be 3D (z, y, x), got shape {clean.shape}")
    if snr <= 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    freqs = np.meshgrid(*[np.fft.fftfreq(n, d=voxel_size_a) for n in clean.shape], indexing="ij")
    k2 = sum(f * f for f in freqs)
    omega = np.sqrt(k2) / (0.5 / voxel_size_a)
    transfer = wedge_mask(clean.shape, tilt_max_deg) * mtf(np.minimum(omega, 1.0))
    signal = np.fft.ifftn(np.fft.fftn(clean) * transfer * ctf(
        k2, defocus_um, voltage_kv, cs_mm, amplitude_contrast, b_factor_a2)).real
    noise = np.fft.ifftn(np.fft.fftn(rng.standard_normal(clean.shape)) * transfer).real
    noise *= math.sqrt(signal.var() / (snr * noise.var()))
    return (signal + noise).astype(np.float32)
