"""Microscope and sample conditions drawn per tomogram from configured ranges.

A model trained on one simulated setting fails one step away from it (another SNR, defocus, tilt
range or crowding). `draw_conditions` draws each tomogram's own setting from `ConditionRanges`;
`tomogram_config` turns it into the simulator's `TomogramConfig` (shape from the physical extent
at the drawn voxel size, copies per class from the drawn volume fraction).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator

from dsmscale.config import JobConfig
from dsmscale.simulation.density import Template
from dsmscale.simulation.tomogram import TomogramConfig, load_templates

Range = tuple[float, float]


class ConditionRanges(JobConfig):
    """What each randomised tomogram draws from: uniform in ``(low, high)`` unless stated."""

    snr: Range = Field((0.005, 0.1), description="SNR, drawn log-uniform")
    defocus_um: Range = Field((2.0, 6.0), description="underfocus in µm")
    cs_mm: tuple[float, ...] = Field((2.0, 2.7), min_length=1,
                                     description="spherical aberration in mm, one of")
    tilt_limit_deg: Range = Field((45.0, 70.0), description="highest |tilt| of each side (deg)")
    asymmetric_fraction: float = Field(
        0.3, ge=0, le=1, description="share of tomograms whose two sides are drawn apart "
        "(e.g. −50°/+70°); the others are symmetric (±θ)")
    tilt_step_deg: tuple[float, ...] = Field((1.0, 2.0, 3.0), min_length=1,
                                             description="tilt increment in degrees, one of")
    thickness_nm: Range = Field((150.0, 300.0), description="sample thickness in nm")
    voxel_size_a: Range = Field((8.0, 14.0), description="voxel size in Å of the tomogram "
                                "(boxes are resampled to the model's)")
    volume_fraction: Range = Field((0.05, 0.4), description="crowding: molecules' volume "
                                   "(spheres holding 99 % of the mass) over the tomogram's; "
                                   "molecules that find no room are dropped")

    @model_validator(mode="after")
    def _ordered(self) -> ConditionRanges:
        for name in ("snr", "defocus_um", "tilt_limit_deg", "thickness_nm", "voxel_size_a",
                     "volume_fraction"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got "
                                 f"({low}, {high})")
        if self.tilt_limit_deg[1] > 90 or self.volume_fraction[1] >= 0.6:
            raise ValueError("tilt_limit_deg must stay within 90° and volume_fraction below 0.6")
        return self


class Conditions(JobConfig):
    """One tomogram's drawn setting (recorded beside it)."""

    snr: float = Field(gt=0)
    defocus_um: float = Field(gt=0, description="underfocus in µm")
    cs_mm: float = Field(gt=0)
    tilt_min_deg: float = Field(ge=-90, lt=0)
    tilt_max_deg: float = Field(gt=0, le=90)
    tilt_step_deg: float = Field(gt=0)
    thickness_nm: float = Field(gt=0)
    voxel_size_a: float = Field(gt=0, description="Å")
    volume_fraction: float = Field(gt=0, lt=1, description="asked for (before jamming)")


def draw_conditions(ranges: ConditionRanges, rng: np.random.Generator) -> Conditions:
    """One tomogram's setting drawn from ``ranges`` (every field drawn, in a fixed order, so a
    seed gives the same settings whichever ranges are degenerate)."""
    def uniform(r: Range) -> float:
        return float(rng.uniform(*r))

    snr = float(np.exp(rng.uniform(math.log(ranges.snr[0]), math.log(ranges.snr[1]))))
    defocus, cs = uniform(ranges.defocus_um), float(rng.choice(ranges.cs_mm))
    first, second = uniform(ranges.tilt_limit_deg), uniform(ranges.tilt_limit_deg)
    asymmetric = rng.uniform() < ranges.asymmetric_fraction
    low, high = (first, second) if asymmetric else (first, first)
    return Conditions(snr=snr, defocus_um=defocus, cs_mm=cs, tilt_min_deg=-low,
                      tilt_max_deg=high, tilt_step_deg=float(rng.choice(ranges.tilt_step_deg)),
                      thickness_nm=uniform(ranges.thickness_nm),
                      voxel_size_a=uniform(ranges.voxel_size_a),
                      volume_fraction=uniform(ranges.volume_fraction))


def tomogram_config(conditions: Conditions, base: TomogramConfig, lateral_nm: float
                    ) -> tuple[TomogramConfig, list[Template]]:
    """``base`` under ``conditions``, and ``base``'s classes rendered at the drawn voxel size
    (rounded to float32, as the tomogram's MRC header will hold it, so that the molecules' table
    and the tomogram agree on it to the last bit):
    shape (z, y, x) = (thickness, lateral, lateral) in voxels of that size (even numbers);
    copies per class such that the classes' spheres fill the drawn volume fraction."""
    voxel_size_a = float(np.float32(conditions.voxel_size_a))  # as an MRC header holds it
    voxel_nm = voxel_size_a / 10
    z, yx = (2 * round(n / voxel_nm / 2) for n in (conditions.thickness_nm, lateral_nm))
    config = TomogramConfig.model_validate(base.model_dump() | {
        "shape_zyx": (z, yx, yx), "voxel_size_a": voxel_size_a,
        "tilt_min_deg": conditions.tilt_min_deg, "tilt_max_deg": conditions.tilt_max_deg,
        "tilt_step_deg": conditions.tilt_step_deg, "defocus_um": conditions.defocus_um,
        "defocus_jitter_um": 0.0, "cs_mm": conditions.cs_mm})
    templates = load_templates(config)
    spheres = sum(4 / 3 * math.pi * t.radius_px**3 for t in templates)
    copies = max(1, round(conditions.volume_fraction * z * yx * yx / spheres))
    return config.model_copy(update={"copies_per_class": copies}), templates
