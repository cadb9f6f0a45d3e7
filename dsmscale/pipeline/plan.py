"""The job plan: the job's particles cut into work units, saved with the job and reused by reruns.

A *work unit* is the job's unit of work on Ray: up to ``max_particles_per_unit`` particles of one
tomogram whose centres lie in one slab (`dsmscale.extraction.group_by_slab`). It is metadata
only (tomogram store, level, the voxel size its boxes are resampled to or NaN, particle ids and
centres) and owns a range of boxes of the job's
per-particle Zarr outputs, starting on a chunk boundary, so no output chunk ever has two
writers. The plan is saved with the job's identity and reused by reruns, so unit ids and box
ranges are stable and a rerun skips exactly the finished units.

Layout of ``JOB/plan/``::

    units.parquet          one row per unit: unit_id, tomogram, store, level, resample_to_a,
                           first_box, n
    skipped.parquet        (tomogram, particle_id) dropped at the volume edge
    particles/NAME.parquet per tomogram: particle_id, unit_id, z, y, x (a row group per unit)
    identity.json          what the plan and the finished units depend on
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from dsmscale.extraction import group_by_slab
from dsmscale.io.atomic import build_output_dir
from dsmscale.io.omezarr import Tomogram
from dsmscale.io.particles import ParticleTable

#: Boxes per chunk of the job's per-particle output arrays; a unit's boxes start on a chunk.
BOXES_PER_CHUNK = 64
IDENTITY = "identity.json"
UNIT_COLUMNS = ["unit_id", "tomogram", "store", "level", "resample_to_a", "first_box", "n"]


@dataclass(frozen=True)
class WorkUnit:
    """One work unit as it travels to Ray: its id, tomogram, store and level, the voxel size
    (Å) its boxes are resampled to (NaN: cut from the level's voxels), the first of its boxes in
    the job's output arrays, and the plan folder its particles are read from."""

    unit_id: str
    tomogram: str
    store: str
    level: int
    resample_to_a: float
    first_box: int
    plan: str

    @classmethod
    def from_batch(cls, batch: dict) -> WorkUnit:
        """The unit of a one-row Ray Data batch (made from `dataclasses.asdict` of one)."""
        return cls(unit_id=str(batch["unit_id"][0]), tomogram=str(batch["tomogram"][0]),
                   store=str(batch["store"][0]), level=int(batch["level"][0]),
                   resample_to_a=float(batch["resample_to_a"][0]),
                   first_box=int(batch["first_box"][0]), plan=str(batch["plan"][0]))

    @property
    def grid_a(self) -> float | None:
        """The voxel size the boxes are resampled to, or None."""
        return None if math.isnan(self.resample_to_a) else self.resample_to_a

    def particles(self) -> pd.DataFrame:
        """The unit's particles (particle_id, z, y, x, in z order), read from its tomogram's file
        of the saved plan by row-group statistics."""
        table = pq.read_table(Path(self.plan) / "particles" / f"{self.tomogram}.parquet",
                              filters=[("unit_id", "=", self.unit_id)],
                              columns=["particle_id", "z", "y", "x"])
        return table.to_pandas()


@dataclass(frozen=True)
class JobPlan:
    """A saved plan: ``units`` (one row per unit, `UNIT_COLUMNS`) and ``skipped``. Per-particle
    metadata stays on disk and is read a unit at a time (`WorkUnit.particles`): the driver
    holds O(units), whatever the size of the job."""

    folder: Path
    units: pd.DataFrame
    skipped: pd.DataFrame

    @property
    def n_boxes(self) -> int:
        """Boxes of the job's output arrays (units start on chunks, so there are gaps)."""
        if self.units.empty:
            return 0
        last = self.units.iloc[-1]
        return int(last["first_box"] + math.ceil(last["n"] / BOXES_PER_CHUNK) * BOXES_PER_CHUNK)

    @property
    def n_particles(self) -> int:
        return int(self.units["n"].sum())

    @classmethod
    def load(cls, folder: Path) -> JobPlan:
        return cls(folder, *(pd.read_parquet(folder / f"{n}.parquet") for n in ("units", "skipped")))

    def work_units(self, units: pd.DataFrame | None = None) -> list[WorkUnit]:
        """``units`` (default all) as the records Ray ships."""
        units = self.units if units is None else units
        return [WorkUnit(row.unit_id, row.tomogram, row.store, int(row.level),
                         float(row.resample_to_a), int(row.first_box), str(self.folder))
                for row in units.itertuples()]


def _save(folder: Path, identity: dict, tables: dict[str, pd.DataFrame],
          particles: dict[str, pd.DataFrame], unit_size: int) -> JobPlan:
    """Write the plan with the job identity it was made for, whole or not at all: a half-written
    plan (a crash) is replaced, never loaded."""

    def build(tmp: Path) -> None:
        (tmp / "particles").mkdir(parents=True)
        for name, frame in tables.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        for name, frame in particles.items():
            frame.to_parquet(tmp / "particles" / f"{name}.parquet", index=False,
                             row_group_size=unit_size)
        (tmp / IDENTITY).write_text(json.dumps(identity, indent=2))

    build_output_dir(folder, overwrite=True, build=build)  # a half-written plan replaces nothing
    return JobPlan.load(folder)


def plan_units(
    tomograms: dict[str, Tomogram], tables: dict[str, ParticleTable], box: int, edge: str,
    max_per_unit: int, folder: Path, identity: dict, resample_to_a: float | None = None,
) -> JobPlan:
    """Units for every tomogram, in tomogram then z order, boxes aligned to `BOXES_PER_CHUNK`
    (on a grid of ``resample_to_a`` Å when given, `dsmscale.extraction.cut_boxes`); saved to
    ``folder`` with the job ``identity``."""
    units, particles, skipped = [], {}, []
    first_box = 0
    grid = math.nan if resample_to_a is None else float(resample_to_a)
    for name in sorted(tomograms):
        tomo = tomograms[name]
        groups = group_by_slab(tomo, tables[name], box, edge, slabs_per_group=1,
                               resample_to_a=resample_to_a)
        skipped.append(pd.DataFrame({"tomogram": name, "particle_id": groups.skipped_ids}))
        parts = []
        for group in groups.groups:
            for k, start in enumerate(range(0, len(group), max_per_unit)):
                part = group.particles.iloc[start:start + max_per_unit]
                unit_id = f"{name}_r{group.first_slab:04d}_{k:03d}"
                units.append({"unit_id": unit_id, "tomogram": name, "store": tomo.source,
                              "level": tomo.level, "resample_to_a": grid,
                              "first_box": first_box, "n": len(part)})
                parts.append(part[["particle_id", "z", "y", "x"]].assign(unit_id=unit_id))
                first_box += math.ceil(len(part) / BOXES_PER_CHUNK) * BOXES_PER_CHUNK
        if parts:
            particles[name] = pd.concat(parts, ignore_index=True)
    return _save(folder, identity, {"units": pd.DataFrame(units, columns=UNIT_COLUMNS),
                                    "skipped": pd.concat(skipped, ignore_index=True)},
                 particles, max_per_unit)
