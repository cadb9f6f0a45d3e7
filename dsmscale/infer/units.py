"""Work units: particles grouped by chunk row, capped in size, with chunk-aligned output rows.

A unit is metadata only (tomogram store, level, particle ids and centres) and owns a range of
rows of the job's per-particle Zarr outputs that starts on a chunk boundary, so no output chunk
ever has two writers. The plan is saved with the job and reused by reruns, so unit ids and row
ranges are stable and a rerun skips exactly the finished units.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.extract import plan_extraction
from dsmscale.io.omezarr import Tomogram
from dsmscale.io.particles import ParticleTable

ROW_CHUNK = 64  # particles per chunk of the per-particle output arrays
IDENTITY = "identity.json"  # in the plan folder: what the plan and finished units depend on


@dataclass(frozen=True)
class Plan:
    """``units``: one row per unit (unit_id, tomogram, store, level, row0, n);
    ``particles``: one row per particle (particle_id, unit_id, row, z, y, x)."""

    units: pd.DataFrame
    particles: pd.DataFrame
    skipped: pd.DataFrame

    @property
    def n_rows(self) -> int:
        if self.units.empty:
            return 0
        last = self.units.iloc[-1]
        return int(last["row0"] + math.ceil(last["n"] / ROW_CHUNK) * ROW_CHUNK)

    def save(self, folder: Path, identity: dict) -> None:
        """Write the plan with the job identity it was made for, whole or not at all: a
        half-written plan (a crash) is replaced, never loaded."""
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in ("units", "particles", "skipped"):
            getattr(self, name).to_parquet(tmp / f"{name}.parquet", index=False)
        (tmp / IDENTITY).write_text(json.dumps(identity, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    @classmethod
    def load(cls, folder: Path) -> Plan:
        return cls(*(pd.read_parquet(folder / f"{n}.parquet")
                     for n in ("units", "particles", "skipped")))


def plan_units(
    tomograms: dict[str, Tomogram], tables: dict[str, ParticleTable], box: int, edge: str,
    max_per_unit: int,
) -> Plan:
    """Units for every tomogram, in tomogram then z order, rows aligned to `ROW_CHUNK`."""
    units, particles, skipped = [], [], []
    row0 = 0
    for name in sorted(tomograms):
        tomo = tomograms[name]
        plan = plan_extraction(tomo, tables[name], box, edge, rows_per_unit=1)
        skipped.append(pd.DataFrame({"tomogram": name, "particle_id": plan.skipped_ids}))
        for unit in plan.units:
            for k, start in enumerate(range(0, len(unit), max_per_unit)):
                part = unit.particles.iloc[start:start + max_per_unit]
                unit_id = f"{name}_r{unit.row_start:04d}_{k:03d}"
                units.append({"unit_id": unit_id, "tomogram": name, "store": tomo.source,
                              "level": tomo.level, "row0": row0, "n": len(part)})
                particles.append(part.assign(unit_id=unit_id,
                                             row=np.arange(row0, row0 + len(part))))
                row0 += math.ceil(len(part) / ROW_CHUNK) * ROW_CHUNK
    columns = ["particle_id", "unit_id", "row", "z", "y", "x"]
    unit_columns = ["unit_id", "tomogram", "store", "level", "row0", "n"]
    return Plan(pd.DataFrame(units, columns=unit_columns),
                pd.concat(particles, ignore_index=True)[columns]
                if particles else pd.DataFrame(columns=columns),
                pd.concat(skipped, ignore_index=True))
