"""Chunk-grouped subtomogram extraction, streamed in batches with bounded memory.

Plan: Dask describes the tomogram lazily and gives its chunk grid; particles are grouped by the
chunk row (z) their centre falls in, and consecutive rows form *work units* that carry only
metadata (ids and coordinates) and can run anywhere.

Extract: within a unit the tomogram is read one chunk row (full y, x) at a time, each row decoded
exactly once, and a rolling window of rows ``r-1 .. r+1`` serves every box whose centre lies in row
``r``; boxes are cut with numpy slicing. No ``vindex``, no task per particle. Peak memory is about
``(2·chunk_z + box/2) × ny × nx × 4`` bytes plus one batch, whatever the number of particles.

Box convention: a box of edge ``B`` around a centre ``c`` (pixels) starts at ``round(c) - B//2``,
so the centre voxel is index ``B//2`` of the box on every axis.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import dask.array as da
import numpy as np
import pandas as pd

from dsmscale.errors import InputError
from dsmscale.io.omezarr import Tomogram, open_tomogram
from dsmscale.io.particles import COORDS, ParticleTable

EdgePolicy = Literal["pad", "skip"]


@dataclass(frozen=True)
class WorkUnit:
    """Particles whose centres lie in chunk rows ``[row_start, row_stop)`` of one tomogram.

    ``particles`` has columns ``particle_id, z, y, x`` (pixels at the tomogram's level), sorted
    by z. It is pure metadata: a unit can be shipped to any worker.
    """

    source: str
    level: int
    row_start: int
    row_stop: int
    particles: pd.DataFrame

    def __len__(self) -> int:
        return len(self.particles)


@dataclass
class SubtomogramBatch:
    """A batch of boxes: ``boxes`` is (n, B, B, B) float32 indexed (z, y, x)."""

    particle_id: np.ndarray
    centres_px: np.ndarray
    padded: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.particle_id)


@dataclass(frozen=True)
class ExtractionPlan:
    """The work units of one tomogram plus the ids dropped by the ``skip`` edge policy."""

    tomogram: Tomogram
    box: int
    units: list[WorkUnit]
    skipped_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def n_particles(self) -> int:
        return sum(len(u) for u in self.units)


def box_starts(centres_px: np.ndarray, box: int) -> np.ndarray:
    """Integer start index of each box (round half up), shape (n, 3)."""
    return np.floor(np.asarray(centres_px) + 0.5).astype(np.int64) - box // 2


def _check_inside(tomogram: Tomogram, table: ParticleTable) -> None:
    coords = table.df[COORDS].to_numpy()
    outside = np.any((coords < -0.5) | (coords >= np.asarray(tomogram.shape) - 0.5), axis=1)
    if outside.any():
        first = table.df.iloc[int(np.argmax(outside))]
        raise InputError(tomogram.source, (
            f"{int(outside.sum())} particle centres lie outside the volume {tomogram.shape} "
            f"(first: id {first['particle_id']} at z,y,x = "
            f"{first['z']:.1f}, {first['y']:.1f}, {first['x']:.1f} px)"))


def _check_voxel_size(tomogram: Tomogram, table: ParticleTable) -> None:
    if abs(table.voxel_size_a - tomogram.voxel_size_a) > 0.01 * tomogram.voxel_size_a:
        raise InputError(tomogram.source, (
            f"voxel size mismatch: particle table {table.voxel_size_a:g} Å at level "
            f"{table.level}, tomogram {tomogram.voxel_size_a:g} Å at level {tomogram.level}"))


def plan_extraction(
    tomogram: Tomogram, particles: ParticleTable, box: int = 40, edge: EdgePolicy = "pad",
    rows_per_unit: int = 4,
) -> ExtractionPlan:
    """Group particles by chunk row into work units (metadata only, nothing is read).

    Raises:
        InputError: empty table, voxel-size mismatch, or centres outside the volume.
    """
    if box < 2 or box > min(tomogram.shape):
        raise ValueError(f"box {box} must be between 2 and the smallest tomogram edge")
    if len(particles) == 0:
        raise InputError(tomogram.source, "particle table is empty")
    particles = particles.at_level(tomogram.level) if particles.level != tomogram.level else particles
    _check_voxel_size(tomogram, particles)
    _check_inside(tomogram, particles)
    df = particles.df[["particle_id", *COORDS]]
    starts = box_starts(df[COORDS].to_numpy(), box)
    inside = np.all((starts >= 0) & (starts + box <= np.asarray(tomogram.shape)), axis=1)
    skipped = df["particle_id"].to_numpy()[~inside] if edge == "skip" else np.empty(0, np.int64)
    if edge == "skip":
        df = df[inside]
    lazy = da.from_zarr(tomogram.array)  # Dask gives the chunk grid the plan follows
    row_edges = np.cumsum((0,) + lazy.chunks[0])
    rows = np.searchsorted(row_edges, np.floor(df["z"].to_numpy() + 0.5), side="right") - 1
    unit_of = rows // rows_per_unit
    units = []
    for unit_index, idx in pd.Series(np.arange(len(df))).groupby(unit_of).indices.items():
        part = df.iloc[idx].sort_values("z", kind="stable").reset_index(drop=True)
        row_start = int(unit_index) * rows_per_unit
        units.append(WorkUnit(tomogram.source, tomogram.level, row_start,
                              min(row_start + rows_per_unit, len(row_edges) - 1), part))
    return ExtractionPlan(tomogram, box, units, skipped)


class _RowWindow:
    """Decoded chunk rows of a tomogram, each read once, serving padded z-slabs."""

    def __init__(self, tomogram: Tomogram):
        self.array = tomogram.array
        self.chunk_z = tomogram.chunks[0]
        self.rows: dict[int, np.ndarray] = {}

    def _row(self, r: int) -> np.ndarray:
        if r not in self.rows:
            self.rows[r] = np.asarray(self.array[r * self.chunk_z:(r + 1) * self.chunk_z])
        return self.rows[r]

    def slab(self, z0: int, z1: int) -> tuple[np.ndarray, int]:
        """Voxels with z in [z0, z1) clipped to the volume, and the z of their first plane."""
        z0, z1 = max(z0, 0), min(z1, self.array.shape[0])
        first, last = z0 // self.chunk_z, (z1 - 1) // self.chunk_z
        for r in [r for r in self.rows if r < first]:
            del self.rows[r]
        parts = [self._row(r) for r in range(first, last + 1)]
        whole = parts[0] if len(parts) == 1 else np.concatenate(parts)
        offset = first * self.chunk_z
        return whole[z0 - offset:z1 - offset], z0


def _cut_box(slab: np.ndarray, slab_z0: int, start: np.ndarray, box: int, out: np.ndarray,
             shape: tuple[int, int, int]) -> bool:
    """Copy one box into ``out``; pad with the mean of the valid part when it crosses the edge.

    Returns whether the box was padded.
    """
    lo = np.maximum(start, 0)
    hi = np.minimum(start + box, shape)
    src = slab[lo[0] - slab_z0:hi[0] - slab_z0, lo[1]:hi[1], lo[2]:hi[2]]
    if np.array_equal(lo, start) and np.array_equal(hi, start + box):
        out[...] = src
        return False
    out[...] = src.mean() if src.size else 0.0
    d = lo - start
    out[d[0]:d[0] + src.shape[0], d[1]:d[1] + src.shape[1], d[2]:d[2] + src.shape[2]] = src
    return True


def _normalise(boxes: np.ndarray) -> None:
    """Zero mean, unit standard deviation per box, in place."""
    flat = boxes.reshape(len(boxes), -1)
    mean = flat.mean(axis=1, keepdims=True)
    std = flat.std(axis=1, keepdims=True)
    flat -= mean
    flat /= np.where(std > 0, std, 1.0)


def extract_unit(
    tomogram: Tomogram, unit: WorkUnit, box: int = 40, batch_size: int = 64,
    normalise: bool = False,
) -> Iterator[SubtomogramBatch]:
    """Cut the boxes of one work unit, yielding batches of at most ``batch_size``."""
    window = _RowWindow(tomogram)
    cz = window.chunk_z
    half = box // 2 + 1
    coords = unit.particles[COORDS].to_numpy()
    ids = unit.particles["particle_id"].to_numpy()
    starts = box_starts(coords, box)
    rows = starts[:, 0] + box // 2
    rows = rows // cz
    buf = np.empty((batch_size, box, box, box), dtype=np.float32)
    padded = np.zeros(batch_size, dtype=bool)
    n, first = 0, 0
    for row in range(unit.row_start, unit.row_stop):
        members = np.flatnonzero(rows == row)
        if not len(members):
            continue
        slab, slab_z0 = window.slab(row * cz - half, (row + 1) * cz + half)
        for i in members:
            padded[n] = _cut_box(slab, slab_z0, starts[i], box, buf[n], tomogram.shape)
            n += 1
            if n == batch_size:
                yield _emit(buf, padded, ids, coords, first, n, normalise)
                first, n = first + n, 0
    if n:
        yield _emit(buf, padded, ids, coords, first, n, normalise)


def _emit(buf, padded, ids, coords, first, n, normalise) -> SubtomogramBatch:
    boxes = buf[:n].copy()
    if normalise:
        _normalise(boxes)
    sel = slice(first, first + n)
    return SubtomogramBatch(ids[sel], coords[sel], padded[:n].copy(), boxes)


def extract_subtomograms(
    store: str | os.PathLike | Tomogram, particles: ParticleTable, box: int = 40,
    batch_size: int = 64, edge: EdgePolicy = "pad", normalise: bool = False, level: int = 0,
) -> Iterator[SubtomogramBatch]:
    """Stream (n, box, box, box) batches of subtomograms from an OME-Zarr tomogram.

    Args:
        store: OME-Zarr path/URL or an opened `Tomogram`.
        particles: centres in pixels (any level; converted to the tomogram's level).
        box: box edge in voxels.
        batch_size: boxes per yielded batch (the last of each work unit may be smaller).
        edge: ``pad`` boxes that cross the volume edge (``batch.padded`` flags them) or
            ``skip`` them (use `plan_extraction` to learn which ids were skipped).
        normalise: zero-mean, unit-variance per box.
        level: pyramid level to read when ``store`` is a path.
    """
    tomogram = store if isinstance(store, Tomogram) else open_tomogram(store, level)
    plan = plan_extraction(tomogram, particles, box, edge)
    for unit in plan.units:
        yield from extract_unit(tomogram, unit, box, batch_size, normalise)
