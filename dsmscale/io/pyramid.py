"""Writing OME-Zarr pyramids: a (z, y, x) volume streamed slab by slab into every level, and an
MRC file converted that way.

Slabs of z planes go in at level 0; each level buffers its planes and writes whole chunk rows,
and hands their 2×2×2 mean to the next level. Memory is bounded by about one chunk row per level,
whatever the volume's size, and every chunk has exactly one writer.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import zarr
from pydantic import Field
from tqdm.auto import tqdm

from dsmscale.config import JobConfig
from dsmscale.errors import InputError
from dsmscale.io.atomic import build_output_dir
from dsmscale.io.mrc import open_volume
from dsmscale.io.omezarr import Codec, create_pyramid


class ConvertConfig(JobConfig):
    """How tomograms are written as OME-Zarr.

    Defaults were chosen by ``jobs/bench_convert.py`` on 2 cores: noisy float32 compresses only
    ~1.1x, so a light codec (lz4) keeps the writer near disk speed.
    """

    levels: int = Field(3, ge=1, le=8, description="pyramid levels (2x2x2 mean each)")
    chunk: int = Field(64, ge=16, le=512, multiple_of=2, description="chunk edge in voxels "
                       "(cubic chunks; even, so each chunk of z planes halves whole)")
    codec: Codec = Field("lz4", description="Blosc codec, or 'none'")
    clevel: int = Field(5, ge=0, le=9, description="Blosc compression level")
    zarr_format: Literal[2, 3] = Field(3, description="3 writes NGFF 0.5, 2 writes NGFF 0.4")
    overwrite: bool = Field(False, description="replace an existing store")


def downsample_mean(block: np.ndarray) -> np.ndarray:
    """2×2×2 block mean of a (z, y, x) array; odd trailing planes are averaged on their own.

    Strided pairwise sums (3 passes over shrinking arrays) are ~8x faster than a 6-D reshape
    mean here, which matters: the pyramid must not slow the converter below disk speed.
    """
    pad = [(0, n % 2) for n in block.shape]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    block = block[0::2] + block[1::2]
    block = block[:, 0::2] + block[:, 1::2]
    block = block[:, :, 0::2] + block[:, :, 1::2]
    block *= np.float32(0.125)
    return block.astype(np.float32, copy=False)


class BackgroundWrites:
    """Chunk-row writes on one background thread, so reading and downsampling the next slab
    overlap with encoding this one. At most ``max_pending`` rows wait (bounded memory); rows are
    written in order, so every chunk still has exactly one writer."""

    def __init__(self, max_pending: int = 2):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zarr-write")
        self.pending: deque[Future] = deque()
        self.max_pending = max_pending

    def submit(self, array: zarr.Array, z: int, block: np.ndarray) -> None:
        self.pending.append(self.pool.submit(array.__setitem__, slice(z, z + len(block)), block))
        while len(self.pending) > self.max_pending:
            self.pending.popleft().result()

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


class LevelWriter:
    """Buffers z-rows of one pyramid level and writes whole chunk rows, feeding the next level."""

    def __init__(self, array: zarr.Array, next_level: LevelWriter | None, writes: BackgroundWrites):
        self.array = array
        self.next_level = next_level
        self.writes = writes
        self.rows: list[np.ndarray] = []
        self.z = 0

    def push(self, slab: np.ndarray) -> None:
        self.rows.append(slab)
        if sum(r.shape[0] for r in self.rows) >= self.array.chunks[0]:
            self._write(final=False)

    def finish(self) -> None:
        if self.rows:
            self._write(final=True)
        if self.next_level is not None:
            self.next_level.finish()

    def _write(self, final: bool) -> None:
        buffered = np.concatenate(self.rows) if len(self.rows) > 1 else self.rows[0]
        chunk_z = self.array.chunks[0]
        n = buffered.shape[0] if final else buffered.shape[0] // chunk_z * chunk_z
        block, rest = buffered[:n], buffered[n:]
        self.writes.submit(self.array, self.z, block)
        self.z += n
        self.rows = [rest] if rest.shape[0] else []
        if self.next_level is not None:
            self.next_level.push(downsample_mean(block))


def write_pyramid(slabs: Iterable[np.ndarray], arrays: list[zarr.Array]) -> None:
    """Write consecutive z-slabs of level 0 (each a whole number of chunk rows but the last)
    into ``arrays``, the pyramid's levels (see `dsmscale.io.omezarr.create_pyramid`)."""
    writes = BackgroundWrites()
    try:
        writer = None
        for array in reversed(arrays):
            writer = LevelWriter(array, writer, writes)
        for slab in slabs:
            writer.push(slab)
        writer.finish()
    finally:
        writes.close()


def write_ome_zarr(
    destination: str | os.PathLike, slabs: Iterable[np.ndarray], shape: tuple[int, int, int],
    voxel_size_a: float | tuple[float, float, float], origin_a: tuple[float, float, float],
    config: ConvertConfig, name: str, attrs: dict | None = None,
) -> None:
    """Write a volume of ``shape`` (z, y, x), given as consecutive z-slabs of ``config.chunk``
    planes, as an OME-Zarr pyramid at ``destination`` (voxel size, one or per axis z, y, x, and
    origin in Å; ``attrs`` under the group's ``dsmscale`` attributes)."""
    arrays = create_pyramid(
        destination, shape, n_levels=config.levels, chunk=config.chunk, voxel_size_a=voxel_size_a,
        origin_a=origin_a, zarr_format=config.zarr_format, codec=config.codec,
        clevel=config.clevel, name=name, extra_attrs=attrs)
    write_pyramid(slabs, arrays)


def _finite_slabs(source: Path, data: np.ndarray, planes: int, progress: bool
                  ) -> Iterator[np.ndarray]:
    """``data`` as float32 slabs of ``planes`` z planes, each checked to hold no NaN/Inf."""
    for z0 in tqdm(range(0, data.shape[0], planes), desc=f"convert {source.name}", unit="slab",
                   disable=not progress, leave=False):
        slab = np.asarray(data[z0:z0 + planes], dtype=np.float32)
        # a sum is non-finite whenever a voxel is (cheap); only then count the culprits exactly
        if not np.isfinite(slab.sum()) and not np.isfinite(slab).all():
            bad = int(np.count_nonzero(~np.isfinite(slab)))
            raise InputError(source, f"{bad} NaN/Inf voxels in z planes {z0}..{z0 + len(slab) - 1}")
        yield slab


def convert_mrc_to_ome_zarr(
    source: str | os.PathLike, destination: str | os.PathLike,
    config: ConvertConfig | None = None, progress: bool = True,
) -> Path:
    """Convert one MRC/MAP/REC (optionally .gz/.bz2) volume to an OME-Zarr pyramid.

    Args:
        source: the MRC file; its voxel size (Å, per axis) and origin become the NGFF
            scale/translation; its data are transposed to (z, y, x) by the header's axis order
            (``mapc``, ``mapr``, ``maps``; `dsmscale.io.mrc.zyx_axes`).
        destination: the ``.zarr`` directory to create (local path).
        config: pyramid, chunk and codec settings.
        progress: show a progress bar.

    Returns:
        The destination path.

    Raises:
        InputError: bad MRC (see `open_volume`), NaN/Inf voxels, or an existing destination
            without ``overwrite``. Nothing is left at ``destination`` on failure.
    """
    config = config or ConvertConfig()
    source = Path(source)

    def build(tmp: Path) -> None:
        with open_volume(source) as vol:
            write_ome_zarr(tmp, _finite_slabs(source, vol.data, config.chunk, progress),
                           vol.shape, vol.voxel_size_zyx_a, vol.origin_a, config, name=source.name,
                           attrs={"source": str(source), "mrc_header": vol.header})

    return build_output_dir(destination, config.overwrite, build)
