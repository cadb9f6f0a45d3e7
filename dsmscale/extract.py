"""Chunk-grouped subtomogram extraction, streamed in batches with bounded memory.

Plan: Dask describes the tomogram lazily and gives its chunk grid; particles are grouped by the
chunk row (z) their centre falls in, and consecutive rows form *work units* that carry only
metadata (ids and coordinates) and can run anywhere.

Extract: within a unit, boxes are cut in ascending z from decoded chunk rows (full y, x), each row read
once and dropped when no later box reaches it; boxes are cut with numpy slicing. No ``vindex``, no
task per particle. Peak memory is about ``3 × chunk_z × ny × nx × 4`` bytes plus one batch,
whatever the number of particles.

Box convention: a box of edge ``B`` around a centre ``c`` (pixels) starts at ``round(c) - B//2``,
so the centre voxel is index ``B//2`` of the box on every axis.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    """Particles of one tomogram whose centres lie in chunk rows from ``row_start`` on.

    ``particles`` has columns ``particle_id, z, y, x`` (pixels at the tomogram's level), sorted
    by z. It is pure metadata: a unit can be shipped to any worker.
    """

    row_start: int
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


def boxes_inside(starts: np.ndarray, box: int, shape_zyx) -> np.ndarray:
    """Which boxes of edge ``box`` starting at ``starts`` (n, 3) lie wholly inside a volume."""
    return np.all((starts >= 0) & (starts + box <= np.asarray(shape_zyx)), axis=1)


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
        raise InputError(tomogram.source, (
            f"a box of {box} voxels does not fit: it must be 2 to {min(tomogram.shape)} voxels "
            f"(the smallest edge at level {tomogram.level})"))
    if len(particles) == 0:
        raise InputError(tomogram.source, "particle table is empty")
    particles = particles.at_level(tomogram.level) if particles.level != tomogram.level else particles
    _check_voxel_size(tomogram, particles)
    _check_inside(tomogram, particles)
    df = particles.df[["particle_id", *COORDS]]
    starts = box_starts(df[COORDS].to_numpy(), box)
    inside = boxes_inside(starts, box, tomogram.shape)
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
        units.append(WorkUnit(row_start, part))
    return ExtractionPlan(tomogram, box, units, skipped)


def every_box_skipped(n_skipped: int, source) -> InputError:
    """The error for a plan with no box left to cut: edge 'skip' dropped all ``n_skipped``."""
    return InputError(source, f"all {n_skipped} particles' boxes cross the volume edge and edge "
                              "is 'skip' (use edge 'pad')")


class _RowWindow:
    """Decoded chunk rows (full y, x) of a tomogram: each row is read once and dropped as soon as
    the boxes being cut (in ascending z) no longer reach it. While boxes are cut from row ``r``,
    row ``r + 1`` is decoded on a background thread, so at most three rows are held.
    """

    def __init__(self, tomogram: Tomogram, last_row: int):
        self.voxels = tomogram.checked
        self.shape = np.asarray(tomogram.shape)
        self.chunk_z = tomogram.chunks[0]
        self.last_row = last_row
        self.rows: dict[int, Future] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="row-prefetch")

    def _read(self, r: int) -> np.ndarray:
        """Decode row ``r``, checked to decode and to hold only finite voxels."""
        return self.voxels[r * self.chunk_z:min((r + 1) * self.chunk_z, int(self.shape[0]))]

    def advance(self, z: int) -> None:
        """Drop the rows below plane ``z``: boxes come in ascending z, so the next box starting
        at ``z`` or later never needs them again."""
        for old in [k for k in self.rows if k < max(z, 0) // self.chunk_z]:
            del self.rows[old]

    def row(self, r: int) -> np.ndarray:
        """Row ``r``, decoded now or taken from the prefetch; the next row starts decoding."""
        if r not in self.rows:
            self.rows[r] = self.pool.submit(self._read, r)
        if r < self.last_row and r + 1 not in self.rows:
            self.rows[r + 1] = self.pool.submit(self._read, r + 1)
        return self.rows[r].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.rows.clear()

    def cut(self, start: np.ndarray, box: int, out: np.ndarray) -> bool:
        """Copy the box starting at ``start`` (z, y, x) into ``out``; return whether it crossed
        the volume edge (then the outside is filled with the mean of the inside)."""
        lo = np.maximum(start, 0)
        hi = np.minimum(start + box, self.shape)
        d, e = lo - start, hi - start
        cz = self.chunk_z
        first, last = lo[0] // cz, (hi[0] - 1) // cz
        for r in range(first, last + 1):
            z0, z1 = max(lo[0], r * cz), min(hi[0], (r + 1) * cz)
            out[z0 - start[0]:z1 - start[0], d[1]:e[1], d[2]:e[2]] = self.row(r)[
                z0 - r * cz:z1 - r * cz, lo[1]:hi[1], lo[2]:hi[2]]
        padded = bool(np.any(d > 0) or np.any(e < box))
        if padded:
            inside = out[d[0]:e[0], d[1]:e[1], d[2]:e[2]].copy()
            out[...] = inside.mean()
            out[d[0]:e[0], d[1]:e[1], d[2]:e[2]] = inside
        return padded


def normalise_boxes(boxes: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation per box, in place (and returned). The one definition
    of the model's input normalisation: training data and inference both use it."""
    flat = boxes.reshape(len(boxes), -1)
    mean = flat.mean(axis=1, keepdims=True)
    std = flat.std(axis=1, keepdims=True)
    flat -= mean
    flat /= np.where(std > 0, std, 1.0)
    return boxes


def extract_unit(
    tomogram: Tomogram, unit: WorkUnit, box: int = 40, batch_size: int = 64,
    normalise: bool = False,
) -> Iterator[SubtomogramBatch]:
    """Cut the boxes of one work unit (in ascending z), yielding batches of ``batch_size``.

    Boxes inside the volume and within one chunk row (the common case, found vectorised up
    front) are a single numpy slice copy; the rest go through `_RowWindow.cut`.
    """
    coords = unit.particles[COORDS].to_numpy()
    ids = unit.particles["particle_id"].to_numpy()
    starts = box_starts(coords, box)
    cz = tomogram.chunks[0]
    last_row = int(min(starts[:, 0].max() + box - 1, tomogram.shape[0] - 1)) // cz
    window = _RowWindow(tomogram, last_row)
    try:
        yield from _cut_batches(window, starts, ids, coords, box, batch_size, normalise)
    finally:
        window.close()


def _cut_batches(window: _RowWindow, starts, ids, coords, box, batch_size, normalise):
    cz = window.chunk_z
    simple = boxes_inside(starts, box, window.shape) & (
        starts[:, 0] // cz == (starts[:, 0] + box - 1) // cz)
    for first in range(0, len(starts), batch_size):
        stop = min(first + batch_size, len(starts))
        boxes = np.empty((stop - first, box, box, box), dtype=np.float32)
        padded = np.zeros(stop - first, dtype=bool)
        for j, i in enumerate(range(first, stop)):
            z, y, x = starts[i]
            window.advance(z)
            if simple[i]:
                r = z // cz
                boxes[j] = window.row(r)[z - r * cz:z - r * cz + box, y:y + box, x:x + box]
            else:
                padded[j] = window.cut(starts[i], box, boxes[j])
        if normalise:
            normalise_boxes(boxes)
        yield SubtomogramBatch(ids[first:stop], coords[first:stop], padded, boxes)


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
