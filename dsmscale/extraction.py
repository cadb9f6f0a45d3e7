"""``dsmscale extract``: subtomograms cut around particles, grouped by slab, streamed in batches.

A *slab* is one chunk row of the tomogram: the z planes of one row of chunks, whole in y and x.

Grouping (`group_by_slab`): Dask describes the tomogram lazily and gives its chunk grid;
particles are grouped by the slab their centre falls in, consecutive slabs forming a
`SlabGroup` that carries only metadata (ids and coordinates) and can be cut anywhere.

Cutting (`cut_boxes`): within a group, boxes are cut in ascending z from decoded slabs, each slab
read once and dropped when no later box reaches it; boxes are numpy slices. No ``vindex``, no
task per particle. Peak memory is about ``3 × chunk_z × ny × nx × 4`` bytes plus one batch,
whatever the number of particles.

Boxes follow `dsmscale.geometry`: a box of edge ``B`` around a centre ``c`` starts at
``round(c) − B // 2``, so the centre voxel is index ``B // 2`` of the box on every axis.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dask.array as da
import numpy as np
import pandas as pd
from pydantic import Field
from tqdm.auto import tqdm

from dsmscale.config import JobConfig
from dsmscale.errors import InputError
from dsmscale.geometry import box_starts, boxes_inside, centres_inside, normalise_boxes
from dsmscale.io.omezarr import Tomogram, open_tomogram
from dsmscale.io.particles import COORDS, ParticleTable, check_one_tomogram, read_particles
from dsmscale.io.subtomograms import SubtomogramBatch, write_subtomograms

EdgePolicy = Literal["pad", "skip"]


class ExtractConfig(JobConfig):
    """How ``dsmscale extract`` cuts boxes."""

    box: int = Field(40, description="box edge in voxels")  # checked against the volume
    edge: EdgePolicy = Field("pad", description="boxes crossing the volume edge: 'pad' them "
                             "(with the mean of the inside, flagged) or 'skip' them")
    normalise: bool = Field(False, description="zero mean, unit standard deviation per box")
    level: int = Field(0, ge=0, description="pyramid level to cut from")
    voxel_size_a: float | None = Field(  # checked by the table's reader, which names the table
        None, description="voxel size (Å) of the particle coordinates, for a table that "
        "records none (one that does must agree); copick picks default to the tomogram's")
    batch_size: int = Field(64, ge=1, description="boxes per streamed batch")
    overwrite: bool = Field(False, description="replace an existing output folder")


@dataclass(frozen=True)
class SlabGroup:
    """Particles of one tomogram whose centres lie in the slabs from ``first_slab`` on;
    ``particles`` has columns ``particle_id, z, y, x`` (pixels at the tomogram's level), sorted
    by z. Pure metadata: it can be shipped to any worker."""

    first_slab: int
    particles: pd.DataFrame

    def __len__(self) -> int:
        return len(self.particles)


@dataclass(frozen=True)
class SlabGroups:
    """The slab groups of one tomogram, and the ids dropped by the ``skip`` edge policy."""

    tomogram: Tomogram
    box: int
    groups: list[SlabGroup]
    skipped_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def n_particles(self) -> int:
        return sum(len(g) for g in self.groups)


def all_skipped_error(n_skipped: int, source) -> InputError:
    """The error when no box is left to cut: edge 'skip' dropped all ``n_skipped``."""
    return InputError(source, f"all {n_skipped} particles' boxes cross the volume edge and edge "
                              "is 'skip' (use edge 'pad')")


def _check_table(tomogram: Tomogram, table: ParticleTable, box: int) -> None:
    """The box fits the volume, and the table is non-empty, at the tomogram's voxel size, and
    inside the volume."""
    if box < 2 or box > min(tomogram.shape):
        raise InputError(tomogram.source, (
            f"a box of {box} voxels does not fit: it must be 2 to {min(tomogram.shape)} voxels "
            f"(the smallest edge at level {tomogram.level})"))
    if len(table) == 0:
        raise InputError(tomogram.source, "particle table is empty")
    if abs(table.voxel_size_a - tomogram.voxel_size_a) > 0.01 * tomogram.voxel_size_a:
        raise InputError(tomogram.source, (
            f"voxel size mismatch: particle table {table.voxel_size_a:g} Å at level "
            f"{table.level}, tomogram {tomogram.voxel_size_a:g} Å at level {tomogram.level}"))
    outside = ~centres_inside(table.df[COORDS].to_numpy(), tomogram.shape)
    if outside.any():
        first = table.df.iloc[int(np.argmax(outside))]
        raise InputError(tomogram.source, (
            f"{int(outside.sum())} particle centres lie outside the volume {tomogram.shape} "
            f"(first: id {first['particle_id']} at z,y,x = "
            f"{first['z']:.1f}, {first['y']:.1f}, {first['x']:.1f} px)"))


def group_by_slab(
    tomogram: Tomogram, particles: ParticleTable, box: int = 40, edge: EdgePolicy = "pad",
    slabs_per_group: int = 4,
) -> SlabGroups:
    """Group particles by the slab their centre lies in (metadata only, nothing is read).

    Raises:
        InputError: a box that does not fit, an empty table, a voxel-size mismatch, or centres
            outside the volume.
    """
    particles = particles.at_level(tomogram.level)
    _check_table(tomogram, particles, box)
    df = particles.df[["particle_id", *COORDS]]
    inside = boxes_inside(box_starts(df[COORDS].to_numpy(), box), box, tomogram.shape)
    skipped = df["particle_id"].to_numpy()[~inside] if edge == "skip" else np.empty(0, np.int64)
    if edge == "skip":
        df = df[inside]
    lazy = da.from_zarr(tomogram.array)  # Dask gives the chunk grid the groups follow
    slab_edges = np.cumsum((0,) + lazy.chunks[0])
    slab = np.searchsorted(slab_edges, np.floor(df["z"].to_numpy() + 0.5), side="right") - 1
    groups = []
    for group, idx in pd.Series(np.arange(len(df))).groupby(slab // slabs_per_group).indices.items():
        part = df.iloc[idx].sort_values("z", kind="stable").reset_index(drop=True)
        groups.append(SlabGroup(int(group) * slabs_per_group, part))
    return SlabGroups(tomogram, box, groups, skipped)


class SlabWindow:
    """Decoded slabs of a tomogram: each slab is read once and dropped as soon as the boxes
    being cut (in ascending z) no longer reach it. While boxes are cut from slab ``s``, slab
    ``s + 1`` is decoded on a background thread, so at most three slabs are held."""

    def __init__(self, tomogram: Tomogram, last_slab: int):
        self.voxels = tomogram.validated_voxels
        self.shape = np.asarray(tomogram.shape)
        self.chunk_z = tomogram.chunks[0]
        self.last_slab = last_slab
        self.slabs: dict[int, Future] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slab-prefetch")

    def _read(self, s: int) -> np.ndarray:
        """Decode slab ``s``, checked to decode and to hold only finite voxels."""
        return self.voxels[s * self.chunk_z:min((s + 1) * self.chunk_z, int(self.shape[0]))]

    def advance(self, z: int) -> None:
        """Drop the slabs below plane ``z``: boxes come in ascending z, so the next box starting
        at ``z`` or later never needs them again."""
        for old in [k for k in self.slabs if k < max(z, 0) // self.chunk_z]:
            del self.slabs[old]

    def slab(self, s: int) -> np.ndarray:
        """Slab ``s``, decoded now or taken from the prefetch; the next slab starts decoding."""
        if s not in self.slabs:
            self.slabs[s] = self.pool.submit(self._read, s)
        if s < self.last_slab and s + 1 not in self.slabs:
            self.slabs[s + 1] = self.pool.submit(self._read, s + 1)
        return self.slabs[s].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.slabs.clear()

    def cut(self, start: np.ndarray, box: int, out: np.ndarray) -> bool:
        """Copy the box starting at ``start`` (z, y, x) into ``out``; return whether it crossed
        the volume edge (then the outside is filled with the mean of the inside)."""
        lo = np.maximum(start, 0)
        hi = np.minimum(start + box, self.shape)
        d, e = lo - start, hi - start
        cz = self.chunk_z
        for s in range(lo[0] // cz, (hi[0] - 1) // cz + 1):
            z0, z1 = max(lo[0], s * cz), min(hi[0], (s + 1) * cz)
            out[z0 - start[0]:z1 - start[0], d[1]:e[1], d[2]:e[2]] = self.slab(s)[
                z0 - s * cz:z1 - s * cz, lo[1]:hi[1], lo[2]:hi[2]]
        padded = bool(np.any(d > 0) or np.any(e < box))
        if padded:
            inside = out[d[0]:e[0], d[1]:e[1], d[2]:e[2]].copy()
            out[...] = inside.mean()
            out[d[0]:e[0], d[1]:e[1], d[2]:e[2]] = inside
        return padded


def cut_boxes(
    tomogram: Tomogram, group: SlabGroup, box: int = 40, batch_size: int = 64,
    normalise: bool = False,
) -> Iterator[SubtomogramBatch]:
    """Cut the boxes of one slab group (in ascending z), yielding batches of ``batch_size``.

    Boxes inside the volume and within one slab (the common case, found vectorised up front)
    are a single numpy slice copy; the rest go through `SlabWindow.cut`.
    """
    coords = group.particles[COORDS].to_numpy()
    ids = group.particles["particle_id"].to_numpy()
    starts = box_starts(coords, box)
    cz = tomogram.chunks[0]
    last_slab = int(min(starts[:, 0].max() + box - 1, tomogram.shape[0] - 1)) // cz
    window = SlabWindow(tomogram, last_slab)
    one_slab = boxes_inside(starts, box, window.shape) & (
        starts[:, 0] // cz == (starts[:, 0] + box - 1) // cz)
    try:
        for first in range(0, len(starts), batch_size):
            stop = min(first + batch_size, len(starts))
            boxes = np.empty((stop - first, box, box, box), dtype=np.float32)
            padded = np.zeros(stop - first, dtype=bool)
            for j, i in enumerate(range(first, stop)):
                z, y, x = starts[i]
                window.advance(z)
                if one_slab[i]:
                    s = z // cz
                    boxes[j] = window.slab(s)[z - s * cz:z - s * cz + box, y:y + box, x:x + box]
                else:
                    padded[j] = window.cut(starts[i], box, boxes[j])
            if normalise:
                normalise_boxes(boxes)
            yield SubtomogramBatch(ids[first:stop], coords[first:stop], padded, boxes)
    finally:
        window.close()


def extract_subtomograms(
    store: str | os.PathLike | Tomogram, particles: ParticleTable, box: int = 40,
    batch_size: int = 64, edge: EdgePolicy = "pad", normalise: bool = False, level: int = 0,
) -> Iterator[SubtomogramBatch]:
    """Stream batches of (n, B, B, B) subtomograms, indexed (z, y, x), from an OME-Zarr tomogram.

    Args:
        store: OME-Zarr path/URL (read at ``level``) or an opened `Tomogram`.
        particles: centres in pixels (any level; converted to the tomogram's).
        box: box edge in voxels.
        batch_size: boxes per yielded batch (the last of each slab group may be smaller).
        edge: ``pad`` boxes that cross the volume edge (``batch.padded`` flags them) or ``skip``
            them (`group_by_slab` tells which ids were skipped).
        normalise: zero mean, unit variance per box.
        level: pyramid level to read when ``tomogram`` is a path.
    """
    tomogram = store if isinstance(store, Tomogram) else open_tomogram(store, level)
    for group in group_by_slab(tomogram, particles, box, edge).groups:
        yield from cut_boxes(tomogram, group, box, batch_size, normalise)


def extract_to_folder(tomogram: str, particles: str | os.PathLike, output: str | os.PathLike,
                      config: ExtractConfig | None = None, progress: bool = True
                      ) -> tuple[Path, int, int]:
    """Cut every particle of a table (one tomogram's) into a subtomogram collection folder
    (`dsmscale.io.subtomograms`); returns (folder, boxes written, boxes skipped at the edge)."""
    config = config or ExtractConfig()
    volume = open_tomogram(tomogram, config.level)
    full = open_tomogram(tomogram, 0)
    table = check_one_tomogram(read_particles(particles, config.voxel_size_a, full.shape,
                                              full.voxel_size_a), particles)
    groups = group_by_slab(volume, table, config.box, config.edge)
    if groups.n_particles == 0:
        raise all_skipped_error(len(groups.skipped_ids), particles)

    def batches(bar: tqdm) -> Iterator[SubtomogramBatch]:
        for group in groups.groups:
            for batch in cut_boxes(volume, group, config.box, config.batch_size,
                                   config.normalise):
                bar.update(len(batch))
                yield batch

    with tqdm(total=groups.n_particles, unit="box", desc="extract", disable=not progress) as bar:
        out = write_subtomograms(batches(bar), groups.n_particles, config.box, output,
                                 {"tomogram": str(tomogram), "voxel_size_a": volume.voxel_size_a},
                                 overwrite=config.overwrite)
    return out, groups.n_particles, len(groups.skipped_ids)
