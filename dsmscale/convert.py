"""MRC → OME-Zarr conversion, streamed in z-slabs so memory is bounded by one chunk row.

Every level of the 2×2×2 mean pyramid is written chunk-row by chunk-row from one process (each
chunk has exactly one writer). The store is built under a temporary name and renamed only when
complete, so a crash never leaves a store that looks finished.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
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
from dsmscale.io.names import by_stem
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


class _Writes:
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


class _LevelWriter:
    """Buffers z-rows of one pyramid level and writes whole chunk rows, feeding the next level."""

    def __init__(self, array: zarr.Array, next_level: _LevelWriter | None, writes: _Writes):
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


def _check_finite(source: Path, slab: np.ndarray, z0: int) -> None:
    # A sum is non-finite whenever a voxel is (cheap); only then count the culprits exactly.
    if not np.isfinite(slab.sum()) and not np.isfinite(slab).all():
        bad = int(np.count_nonzero(~np.isfinite(slab)))
        raise InputError(source, f"{bad} NaN/Inf voxels in z planes {z0}..{z0 + slab.shape[0] - 1}")


def convert_mrc_to_ome_zarr(
    source: str | os.PathLike, destination: str | os.PathLike,
    config: ConvertConfig | None = None, progress: bool = True,
) -> Path:
    """Convert one MRC/MAP/REC (optionally .gz/.bz2) volume to an OME-Zarr pyramid.

    Args:
        source: the MRC file; its voxel size (Å) and origin become the NGFF scale/translation.
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
            arrays = create_pyramid(
                tmp, vol.shape, n_levels=config.levels, chunk=config.chunk,
                voxel_size_a=vol.voxel_size_a, origin_a=vol.origin_a,
                zarr_format=config.zarr_format, codec=config.codec, clevel=config.clevel,
                name=source.name, extra_attrs={"source": str(source), "mrc_header": vol.header})
            writes = _Writes()
            try:
                writer = None
                for array in reversed(arrays):
                    writer = _LevelWriter(array, writer, writes)
                step = config.chunk
                for z0 in tqdm(range(0, vol.shape[0], step), desc=f"convert {source.name}",
                               unit="slab", disable=not progress, leave=False):
                    slab = np.asarray(vol.data[z0:z0 + step], dtype=np.float32)
                    _check_finite(source, slab, z0)
                    writer.push(slab)
                writer.finish()
            finally:
                writes.close()

    dst = build_output_dir(destination, config.overwrite, build)
    return dst


def convert_many(
    sources: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
    config: ConvertConfig | None = None,
) -> tuple[list[Path], dict[str, str]]:
    """Convert many tomograms in parallel as Ray tasks (one CPU each).

    Returns:
        (converted stores, {source: error message} for the inputs that failed). Failures do not
        stop the others.
    """
    import ray

    from dsmscale.parallel import ensure_ray

    config = config or ConvertConfig()
    ensure_ray()
    task = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=[OSError])(
        convert_mrc_to_ome_zarr)
    out = Path(output_dir)
    named = by_stem([str(s) for s in sources], "tomogram")
    refs = {s: task.remote(s, out / f"{stem}.zarr", config, False) for stem, s in named.items()}
    done, failed = [], {}
    for source, ref in tqdm(refs.items(), desc="convert", unit="tomogram"):
        try:
            done.append(ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            failed[source] = str(cause).splitlines()[0]
    return done, failed

