"""A crowded tomogram from real structures: placement, tilt series with CTF/MTF/noise, and WBP.

Per tilt image: ``((P + n₁)·CTF + n₂)·MTF`` with ``n₁, n₂`` white Gaussian of equal variance, then
weighted back-projection. The process is linear, so the noise-free reconstruction ``S`` and a
unit-noise reconstruction ``N`` are computed once, and the tomogram at any SNR is exactly
``R = S + σ·N`` with ``σ² = var(S) / (SNR · var(N))`` measured in the interior: the SNR
``var(S)/var(R − S)`` is therefore met exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from dsmscale.config import JobConfig
from dsmscale.simulation.density import Template, load_template
from dsmscale.simulation.optics import ctf, frequency_grid_2d, mtf
from dsmscale.simulation.placement import Placement, place_crowded
from dsmscale.simulation.render import render_template
from dsmscale.simulation.structures import STANDARD_CLASSES, find_structure
from dsmscale.simulation.tilt import TiltGeometry, back_project, project


class TomogramConfig(JobConfig):
    """One simulated tomogram. Lengths in voxels unless the name says otherwise."""

    shape_zyx: tuple[int, int, int] = Field((300, 600, 600), description="volume (z, y, x)")
    voxel_size_a: float = Field(10.0, gt=0, description="voxel size in Å")
    resolution_a: float = Field(40.0, gt=0, description="template resolution in Å (Situs σ)")
    classes: tuple[str, ...] = Field(STANDARD_CLASSES, min_length=1, description="PDB/EMDB ids")
    copies_per_class: int = Field(220, ge=1, description="molecules per class (before jamming)")
    structures_dir: str | None = Field(None, description="default: shared/structures")
    tilt_max_deg: float = Field(60.0, gt=0, le=90)
    tilt_min_deg: float | None = Field(None, ge=-90, lt=0, description="lowest tilt (deg); "
                                       "default −tilt_max_deg (symmetric)")
    tilt_step_deg: float = Field(2.0, gt=0)
    voltage_kv: float = 300.0
    cs_mm: float = 2.0
    defocus_um: float = Field(5.0, gt=0, description="underfocus in µm")
    defocus_jitter_um: float = Field(1.0, ge=0, description="uniform ± jitter per tomogram")
    amplitude_contrast: float = Field(0.07, ge=0, lt=1)
    b_factor_a2: float = Field(100.0, ge=0, description="CTF envelope exp(-B k²/4)")
    snr_margin: float = Field(0.125, ge=0, lt=0.5, description="border excluded from SNR (frac.)")


@dataclass
class SimulatedTomogram:
    """``density``: clean rendered volume; ``noise_free``: S; ``noise_unit``: one N per SNR."""

    config: TomogramConfig
    templates: list[Template]
    placement: Placement
    density: np.ndarray
    noise_free: np.ndarray
    noise_unit: list[np.ndarray]
    defocus_um: float

    def interior(self) -> tuple[slice, ...]:
        m = self.config.snr_margin
        return tuple(slice(int(n * m), n - int(n * m)) for n in self.density.shape)

    def noisy(self, snr: float, realisation: int = 0) -> tuple[np.ndarray, float]:
        """(R at ``snr``, measured var(S)/var(R − S) in the interior)."""
        inside = self.interior()
        s, n = self.noise_free, self.noise_unit[realisation]
        sigma = np.sqrt(s[inside].var(dtype=np.float64) / (snr * n[inside].var(dtype=np.float64)))
        noisy = s + np.float32(sigma) * n
        measured = s[inside].var(dtype=np.float64) / (noisy - s)[inside].var(dtype=np.float64)
        return noisy, float(measured)


def load_templates(config: TomogramConfig) -> list[Template]:
    return [load_template(find_structure(c, config.structures_dir), c, config.voxel_size_a,
                          config.resolution_a) for c in config.classes]


def reference_box(name: str, box: int, config: TomogramConfig | None = None) -> np.ndarray:
    """The true density of class ``name`` (Da per voxel) upright at the centre of a ``box``³
    box, as the simulator renders it with ``config``'s voxel size and resolution."""
    config = (config or TomogramConfig()).model_copy(update={"classes": (name,)})
    out = np.zeros((box,) * 3, np.float64)
    render_template(out, np.zeros(3, int), load_templates(config)[0].density, np.eye(3),
                    np.full(3, box // 2))
    return out.astype(np.float32)


def render_volume(shape, templates: list[Template], placement: Placement) -> np.ndarray:
    volume = np.zeros(shape, np.float32)
    origin = np.zeros(3, int)
    for cls, centre, rotation in zip(placement.class_index, placement.centres,
                                     placement.rotations, strict=True):
        render_template(volume, origin, templates[cls].density, rotation, centre)
    return volume


def _filter_tilts(images: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    shape = images.shape[-2:]
    return np.fft.irfft2(np.fft.rfft2(images) * transfer, s=shape).astype(np.float32)


def simulate_tomogram(
    config: TomogramConfig, seed: int, n_noise: int = 1,
    templates: list[Template] | None = None,
) -> SimulatedTomogram:
    """Place, render, image and reconstruct one tomogram (deterministic for a given seed)."""
    rng = np.random.default_rng(seed)
    templates = templates or load_templates(config)
    radii = np.array([t.radius_px for t in templates])
    placement = place_crowded(config.shape_zyx, radii,
                              np.full(len(templates), config.copies_per_class), rng)
    density = render_volume(config.shape_zyx, templates, placement)
    low = -config.tilt_max_deg if config.tilt_min_deg is None else config.tilt_min_deg
    geometry = TiltGeometry.from_range(config.shape_zyx, low, config.tilt_max_deg,
                                       config.tilt_step_deg)
    defocus = config.defocus_um + rng.uniform(-1, 1) * config.defocus_jitter_um
    image_shape = (config.shape_zyx[1], geometry.detector_width)
    k2, nyq = frequency_grid_2d(image_shape, config.voxel_size_a)
    ctf_2d = ctf(k2, defocus, config.voltage_kv, config.cs_mm, config.amplitude_contrast,
                 config.b_factor_a2).astype(np.float32)
    mtf_2d = mtf(nyq).astype(np.float32)
    tilts = project(density, geometry)
    noise_free = back_project(_filter_tilts(tilts, ctf_2d * mtf_2d), geometry)
    del tilts
    noise_unit = []
    for _ in range(n_noise):
        n1 = rng.normal(0, np.sqrt(0.5), size=(len(geometry.angles_deg),) + image_shape)
        n2 = rng.normal(0, np.sqrt(0.5), size=n1.shape)
        images = np.fft.irfft2((np.fft.rfft2(n1) * ctf_2d + np.fft.rfft2(n2)) * mtf_2d,
                               s=n1.shape[-2:]).astype(np.float32)
        noise_unit.append(back_project(images, geometry))
    return SimulatedTomogram(config, templates, placement, density, noise_free, noise_unit,
                             float(defocus))
