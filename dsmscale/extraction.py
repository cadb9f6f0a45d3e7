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

Another grid (``resample_to_a``, e.g. a model's 10 Å): each box is resampled from a window of
the volume around its centre (`dsmscale.resampling`: Fourier resampling — the window's DCT
spectrum cropped to the new grid's Nyquist when downsampling, zero-padded when upsampling),
its samples at ``c + (i − B // 2)·s`` source voxels per axis (``s`` = new / old voxel size),
so ``c`` itself is box index ``B // 2``. A volume already on that grid (within 0.1 %) is cut as
above, bit for bit. ``edge`` then applies to the samples: a box is padded
(skipped) when any sample lies outside the volume's outermost voxel centres; the window's
outside is filled with the mean of its inside.

Particle coordinates are pixels at the tomogram's level. For a volume with anisotropic voxels,
a table's coordinates are taken as Å positions (pixels × the table's voxel size) and placed on
each axis by that axis's voxel size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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
from dsmscale.geometry import (
    EDGE_TOLERANCE_PX,
    box_starts,
    boxes_inside,
    centres_inside,
    normalise_boxes,
    onto_volume,
    to_level,
)
from dsmscale.io.omezarr import Tomogram, open_tomogram
from dsmscale.io.particles import (
    COORDS,
    ParticleTable,
    check_one_tomogram,
    read_particles,
)
from dsmscale.io.subtomograms import SubtomogramBatch, write_subtomograms
from dsmscale.resampling import (
    TOLERANCE,
    nearest_level_below,
    needs_resampling,
    resample_steps,
    resample_window,
    samples_inside,
    window_size,
    window_starts,
)

EdgePolicy = Literal["pad", "skip"]


class ExtractConfig(JobConfig):
    """How ``dsmscale extract`` cuts boxes."""

    box: int = Field(40, description="box edge in voxels")  # checked against the volume
    edge: EdgePolicy = Field("pad", description="boxes crossing the volume edge: 'pad' them "
                             "(with the mean of the inside, flagged) or 'skip' them")
    normalise: bool = Field(False, description="zero mean, unit standard deviation per box")
    resample_to_a: float | None = Field(
        None, gt=0, description="cut the boxes on a grid of this voxel size (Å), Fourier-"
        "resampled from the level (spectrum cropped to its Nyquist, or zero-padded); default: "
        "the level's own voxels")
    level: int | None = Field(None, ge=0, description="pyramid level to cut from; default 0, "
                              "or with resample_to_a the coarsest level not coarser than it")
    voxel_size_a: float | None = Field(  # checked by the table's reader, which names the table
        None, description="voxel size (Å) of the particle coordinates, for a table that "
        "records none (one that does must agree)")
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


def grid_steps(tomogram: Tomogram, resample_to_a: float | None) -> np.ndarray | None:
    """Source voxels per box voxel, (z, y, x), when boxes are resampled to ``resample_to_a`` Å;
    None when they are cut from the level's own voxels (no target, or one within 0.1 %)."""
    if resample_to_a is None or not needs_resampling(tomogram.voxel_size_zyx_a, resample_to_a):
        return None
    return resample_steps(tomogram.voxel_size_zyx_a, resample_to_a)


def choose_level(level: int | None, pyramid_voxel_zyx_a, resample_to_a: float | None,
                 tolerance: float = TOLERANCE) -> int:
    """The pyramid level to cut from: ``level`` when given; else level 0, or with a target
    grid the coarsest level whose voxels are nowhere coarser than it by more than
    ``tolerance`` (level 0 when even its are; `dsmscale.resampling.nearest_level_below`)."""
    if level is not None:
        return level
    if resample_to_a is None:
        return 0
    return nearest_level_below(list(pyramid_voxel_zyx_a), resample_to_a, tolerance)


def tomogram_pixels(tomogram: Tomogram, table: ParticleTable) -> pd.DataFrame:
    """The table's rows with coordinates in voxels of the tomogram's level, through Å (the
    table's pixels × its voxel size, divided per axis by the volume's level-0 voxel size): a
    table in unbinned tilt-series pixels goes with a binned tomogram, and anisotropic voxels
    with either."""
    level0 = np.asarray(tomogram.voxel_size_zyx_a) / 2.0**tomogram.level
    pixels = to_level(table.coordinates_a() / level0, 0, tomogram.level)
    return table.df.assign(**{ax: pixels[:, i] for i, ax in enumerate(COORDS)})


def _check_box(tomogram: Tomogram, box: int, steps: np.ndarray | None) -> None:
    """The box (on the resampled grid: the source voxels it spans) fits the volume."""
    if steps is None:
        if box < 2 or box > min(tomogram.shape):
            raise InputError(tomogram.source, (
                f"a box of {box} voxels does not fit: it must be 2 to {min(tomogram.shape)} "
                f"voxels (the smallest edge at level {tomogram.level})"))
        return
    span = np.ceil((box - 1) * steps).astype(int) + 1
    if box < 2 or np.any(span > np.asarray(tomogram.shape)):
        raise InputError(tomogram.source, (
            f"a box of {box} voxels resampled spans {tuple(int(n) for n in span)} voxels of "
            f"level {tomogram.level}, more than its shape {tomogram.shape}"))


def _checked_pixels(tomogram: Tomogram, table: ParticleTable, box: int,
                    steps: np.ndarray | None) -> pd.DataFrame:
    """The table in the tomogram's pixels (`tomogram_pixels`), checked: the box fits, the table
    is non-empty, and its centres lie inside the volume (those within `EDGE_TOLERANCE_PX` of it
    are rounding: moved onto it)."""
    _check_box(tomogram, box, steps)
    if len(table) == 0:
        raise InputError(tomogram.source, "particle table is empty")
    df = tomogram_pixels(tomogram, table)
    outside = ~centres_inside(df[COORDS].to_numpy(), tomogram.shape, EDGE_TOLERANCE_PX)
    if outside.any():
        first = df.iloc[int(np.argmax(outside))]
        raise InputError(tomogram.source, (
            f"{int(outside.sum())} particle centres lie outside the volume {tomogram.shape} "
            f"(first: id {first['particle_id']} at z,y,x = "
            f"{first['z']:.1f}, {first['y']:.1f}, {first['x']:.1f} px)"))
    df[COORDS] = onto_volume(df[COORDS].to_numpy(), tomogram.shape)
    return df


def group_by_slab(
    tomogram: Tomogram, particles: ParticleTable, box: int = 40, edge: EdgePolicy = "pad",
    slabs_per_group: int = 4, resample_to_a: float | None = None,
) -> SlabGroups:
    """Group particles by the slab their centre lies in (metadata only, nothing is read).
    ``resample_to_a``: boxes will be cut on that grid (`cut_boxes`); ``edge`` 'skip' then
    drops the boxes whose samples reach outside the volume.

    Raises:
        InputError: a box that does not fit, an empty table, or centres
            outside the volume.
    """
    steps = grid_steps(tomogram, resample_to_a)
    df = _checked_pixels(tomogram, particles, box, steps)[["particle_id", *COORDS]]
    coords = df[COORDS].to_numpy()
    inside = (boxes_inside(box_starts(coords, box), box, tomogram.shape) if steps is None
              else samples_inside(coords, box, steps, tomogram.shape))
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

    def cut(self, start: np.ndarray, size, out: np.ndarray) -> bool:
        """Copy the region of ``size`` (an edge, or (z, y, x) edges) starting at ``start``
        (z, y, x) into ``out``; return whether it crossed the volume edge (then the outside is
        filled with the mean of the inside)."""
        size = np.broadcast_to(np.asarray(size, np.int64), (3,))
        lo = np.maximum(start, 0)
        hi = np.minimum(start + size, self.shape)
        d, e = lo - start, hi - start
        cz = self.chunk_z
        for s in range(lo[0] // cz, (hi[0] - 1) // cz + 1):
            z0, z1 = max(lo[0], s * cz), min(hi[0], (s + 1) * cz)
            out[z0 - start[0]:z1 - start[0], d[1]:e[1], d[2]:e[2]] = self.slab(s)[
                z0 - s * cz:z1 - s * cz, lo[1]:hi[1], lo[2]:hi[2]]
        padded = bool(np.any(d > 0) or np.any(e < size))
        if padded:
            inside = out[d[0]:e[0], d[1]:e[1], d[2]:e[2]].copy()
            out[...] = inside.mean()
            out[d[0]:e[0], d[1]:e[1], d[2]:e[2]] = inside
        return padded


Cutter = Callable[[SlabWindow, int, np.ndarray], bool]


def _direct_cutter(tomogram: Tomogram, coords: np.ndarray, box: int) -> tuple[int, Cutter]:
    """(last slab read, cut): boxes sliced from the level's voxels. Boxes inside the volume and
    within one slab (the common case, found vectorised up front) are a single numpy slice
    copy; the rest go through `SlabWindow.cut`."""
    starts = box_starts(coords, box)
    cz = tomogram.chunks[0]
    last_slab = int(min(starts[:, 0].max() + box - 1, tomogram.shape[0] - 1)) // cz
    one_slab = boxes_inside(starts, box, tomogram.shape) & (
        starts[:, 0] // cz == (starts[:, 0] + box - 1) // cz)

    def cut(window: SlabWindow, i: int, out: np.ndarray) -> bool:
        z, y, x = starts[i]
        window.advance(z)
        if one_slab[i]:
            s = z // cz
            out[...] = window.slab(s)[z - s * cz:z - s * cz + box, y:y + box, x:x + box]
            return False
        return window.cut(starts[i], box, out)

    return last_slab, cut


def _resampled_cutter(tomogram: Tomogram, coords: np.ndarray, box: int, steps: np.ndarray
                      ) -> tuple[int, Cutter]:
    """(last slab read, cut): boxes resampled from a window around each centre
    (`dsmscale.resampling`); a box is padded when a sample lies outside the volume."""
    size = window_size(box, steps)
    starts = window_starts(coords, box, steps)
    inside = samples_inside(coords, box, steps, tomogram.shape)
    first = coords - (box // 2) * steps - starts  # first sample, in window voxels
    last_slab = int(np.clip(starts[:, 0].max() + size[0] - 1, 0, tomogram.shape[0] - 1)
                    ) // tomogram.chunks[0]
    region = np.empty(tuple(size), np.float32)

    def cut(window: SlabWindow, i: int, out: np.ndarray) -> bool:
        window.advance(starts[i, 0])
        window.cut(starts[i], size, region)
        out[...] = resample_window(region, first[i], box, steps)
        return not inside[i]

    return last_slab, cut


def cut_boxes(
    tomogram: Tomogram, group: SlabGroup, box: int = 40, batch_size: int = 64,
    normalise: bool = False, resample_to_a: float | None = None,
) -> Iterator[SubtomogramBatch]:
    """Cut the boxes of one slab group (in ascending z), yielding batches of ``batch_size``;
    with ``resample_to_a``, on a grid of that voxel size (Å), resampled (`grid_steps`)."""
    coords = group.particles[COORDS].to_numpy()
    ids = group.particles["particle_id"].to_numpy()
    steps = grid_steps(tomogram, resample_to_a)
    last_slab, cut = (_direct_cutter(tomogram, coords, box) if steps is None
                      else _resampled_cutter(tomogram, coords, box, steps))
    window = SlabWindow(tomogram, last_slab)
    try:
        for first in range(0, len(coords), batch_size):
            stop = min(first + batch_size, len(coords))
            boxes = np.empty((stop - first, box, box, box), dtype=np.float32)
            padded = np.zeros(stop - first, dtype=bool)
            for j, i in enumerate(range(first, stop)):
                padded[j] = cut(window, i, boxes[j])
            if normalise:
                normalise_boxes(boxes)
            yield SubtomogramBatch(ids[first:stop], coords[first:stop], padded, boxes)
    finally:
        window.close()


def extract_subtomograms(
    store: str | os.PathLike | Tomogram, particles: ParticleTable, box: int = 40,
    batch_size: int = 64, edge: EdgePolicy = "pad", normalise: bool = False,
    level: int | None = None, resample_to_a: float | None = None,
) -> Iterator[SubtomogramBatch]:
    """Stream batches of (n, B, B, B) subtomograms, indexed (z, y, x), from an OME-Zarr tomogram.

    Args:
        store: OME-Zarr path/URL (read at ``level``) or an opened `Tomogram`.
        particles: centres in pixels (any level; converted to the tomogram's).
        box: box edge in voxels (of the ``resample_to_a`` grid when given).
        batch_size: boxes per yielded batch (the last of each slab group may be smaller).
        edge: ``pad`` boxes that cross the volume edge (``batch.padded`` flags them) or ``skip``
            them (`group_by_slab` tells which ids were skipped).
        normalise: zero mean, unit variance per box.
        level: pyramid level to read when ``store`` is a path (`choose_level`: default 0, or
            with ``resample_to_a`` the coarsest level not coarser than it).
        resample_to_a: cut the boxes on a grid of this voxel size (Å), resampled from the
            level (`dsmscale.resampling`: Fourier cropping or zero-padding); the batches'
            ``centres_px`` stay in the level's pixels.
    """
    tomogram = store if isinstance(store, Tomogram) else _open_level(store, level, resample_to_a)
    for group in group_by_slab(tomogram, particles, box, edge, resample_to_a=resample_to_a).groups:
        yield from cut_boxes(tomogram, group, box, batch_size, normalise, resample_to_a)


def _open_level(store: str | os.PathLike, level: int | None, resample_to_a: float | None
                ) -> Tomogram:
    """The tomogram at the level `choose_level` picks."""
    full = open_tomogram(store, 0) if level is None else None
    return open_tomogram(store, choose_level(
        level, full.pyramid_voxel_zyx_a if full else (), resample_to_a))


def _box_voxels(volume: Tomogram, resample_to_a: float | None) -> dict[str, float]:
    """The boxes' voxel size as collection metadata: ``voxel_size_a``, or one per axis
    (``voxel_size_z_a`` …) for boxes cut unresampled from anisotropic voxels."""
    if grid_steps(volume, resample_to_a) is not None:
        return {"voxel_size_a": float(resample_to_a)}
    if volume.is_isotropic:
        return {"voxel_size_a": volume.voxel_size_a}
    return {f"voxel_size_{ax}_a": v for ax, v in zip("zyx", volume.voxel_size_zyx_a, strict=True)}


def extract_to_folder(tomogram: str, particles: str | os.PathLike, output: str | os.PathLike,
                      config: ExtractConfig | None = None, progress: bool = True
                      ) -> tuple[Path, int, int]:
    """Cut every particle of a table (one tomogram's) into a subtomogram collection folder
    (`dsmscale.io.subtomograms`); returns (folder, boxes written, boxes skipped at the edge)."""
    config = config or ExtractConfig()
    volume = _open_level(tomogram, config.level, config.resample_to_a)
    table = check_one_tomogram(read_particles(particles, config.voxel_size_a), particles)
    groups = group_by_slab(volume, table, config.box, config.edge,
                           resample_to_a=config.resample_to_a)
    if groups.n_particles == 0:
        raise all_skipped_error(len(groups.skipped_ids), particles)

    def batches(bar: tqdm) -> Iterator[SubtomogramBatch]:
        for group in groups.groups:
            for batch in cut_boxes(volume, group, config.box, config.batch_size,
                                   config.normalise, config.resample_to_a):
                bar.update(len(batch))
                yield batch

    with tqdm(total=groups.n_particles, unit="box", desc="extract", disable=not progress) as bar:
        out = write_subtomograms(batches(bar), groups.n_particles, config.box, output,
                                 {"tomogram": str(tomogram), "level": volume.level,
                                  **_box_voxels(volume, config.resample_to_a)},
                                 overwrite=config.overwrite)
    return out, groups.n_particles, len(groups.skipped_ids)
