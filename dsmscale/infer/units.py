"""Work units: particles grouped by chunk row, capped in size, with chunk-aligned output rows.

A unit is metadata only (tomogram store, level, particle ids and centres) and owns a range of
rows of the job's per-particle Zarr outputs that starts on a chunk boundary, so no output chunk
ever has two writers. The plan is saved with the job and reused by reruns, so unit ids and row
ranges are stable and a rerun skips exactly the finished units.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from dsmscale.extract import plan_extraction
from dsmscale.io.atomic import build_output_dir
from dsmscale.io.omezarr import Tomogram
from dsmscale.io.particles import ParticleTable

ROW_CHUNK = 64  # particles per chunk of the per-particle output arrays
IDENTITY = "identity.json"  # in the plan folder: what the plan and finished units depend on


@dataclass(frozen=True)
class Plan:
    """A saved plan: ``units``, one row per unit (unit_id, tomogram, store, level, row0, n), and
    ``skipped``, (tomogram, particle_id) dropped at the volume edge. Per-particle metadata
    (particle_id, unit_id, z, y, x) stays on disk, one file per tomogram
    (``folder/particles/NAME.parquet``, a row group per unit at most), and is read a unit at a
    time (`unit_particles`): the driver holds O(units), and a read costs what one tomogram's
    file does, whatever the size of the job."""

    folder: Path
    units: pd.DataFrame
    skipped: pd.DataFrame

    @property
    def n_rows(self) -> int:
        if self.units.empty:
            return 0
        last = self.units.iloc[-1]
        return int(last["row0"] + math.ceil(last["n"] / ROW_CHUNK) * ROW_CHUNK)

    @classmethod
    def load(cls, folder: Path) -> Plan:
        return cls(folder, *(pd.read_parquet(folder / f"{n}.parquet") for n in ("units", "skipped")))


def unit_particles(folder: str | Path, tomogram: str, unit_id: str) -> pd.DataFrame:
    """The particles of one unit (particle_id, z, y, x, in z order), read from its tomogram's
    file of the saved plan by row-group statistics."""
    table = pq.read_table(Path(folder) / "particles" / f"{tomogram}.parquet",
                          filters=[("unit_id", "=", unit_id)],
                          columns=["particle_id", "z", "y", "x"])
    return table.to_pandas()


def _save(folder: Path, identity: dict, tables: dict[str, pd.DataFrame],
          particles: dict[str, pd.DataFrame], unit_rows: int) -> Plan:
    """Write the plan with the job identity it was made for, whole or not at all: a half-written
    plan (a crash) is replaced, never loaded."""

    def build(tmp: Path) -> None:
        (tmp / "particles").mkdir(parents=True)
        for name, frame in tables.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        for name, frame in particles.items():
            frame.to_parquet(tmp / "particles" / f"{name}.parquet", index=False,
                             row_group_size=unit_rows)
        (tmp / IDENTITY).write_text(json.dumps(identity, indent=2))

    build_output_dir(folder, overwrite=True, build=build)  # a half-written plan replaces nothing
    return Plan.load(folder)


def plan_units(
    tomograms: dict[str, Tomogram], tables: dict[str, ParticleTable], box: int, edge: str,
    max_per_unit: int, folder: Path, identity: dict,
) -> Plan:
    """Units for every tomogram, in tomogram then z order, rows aligned to `ROW_CHUNK`; saved
    to ``folder`` with the job ``identity``."""
    units, particles, skipped = [], {}, []
    row0 = 0
    for name in sorted(tomograms):
        tomo = tomograms[name]
        plan = plan_extraction(tomo, tables[name], box, edge, rows_per_unit=1)
        skipped.append(pd.DataFrame({"tomogram": name, "particle_id": plan.skipped_ids}))
        parts = []
        for unit in plan.units:
            for k, start in enumerate(range(0, len(unit), max_per_unit)):
                part = unit.particles.iloc[start:start + max_per_unit]
                unit_id = f"{name}_r{unit.row_start:04d}_{k:03d}"
                units.append({"unit_id": unit_id, "tomogram": name, "store": tomo.source,
                              "level": tomo.level, "row0": row0, "n": len(part)})
                parts.append(part[["particle_id", "z", "y", "x"]].assign(unit_id=unit_id))
                row0 += math.ceil(len(part) / ROW_CHUNK) * ROW_CHUNK
        if parts:
            particles[name] = pd.concat(parts, ignore_index=True)
    unit_columns = ["unit_id", "tomogram", "store", "level", "row0", "n"]
    return _save(folder, identity, {"units": pd.DataFrame(units, columns=unit_columns),
                                    "skipped": pd.concat(skipped, ignore_index=True)},
                 particles, max_per_unit)
