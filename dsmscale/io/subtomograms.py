"""Subtomogram collections on disk: an N×B×B×B Zarr array plus a Parquet table of metadata.

Layout of a collection folder ``OUT``::

    OUT/boxes.zarr        float32 (N, B, B, B), indexed (particle, z, y, x), chunked by batch
    OUT/particles.parquet one row per box: index, particle_id, tomogram, z, y, x (pixels), ...

The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from dsmscale.errors import InputError
from dsmscale.io.atomic import build_output_dir
from dsmscale.io.omezarr import compressor_for


@dataclass
class SubtomogramBatch:
    """A batch of boxes: ``boxes`` (n, B, B, B) float32 indexed (z, y, x), cut around the
    centres ``centres_px`` (n, 3) (z, y, x pixels) of particles ``particle_id``; ``padded``
    flags boxes that crossed the volume edge."""

    particle_id: np.ndarray
    centres_px: np.ndarray
    padded: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.particle_id)


def create_box_array(
    path: str | os.PathLike, n: int, box: int, dtype: str = "float32", chunk_boxes: int = 64,
    attributes: dict | None = None,
) -> zarr.Array:
    """Create an (n, box, box, box) Zarr v3 array (Blosc-lz4) of boxes indexed (particle, z, y,
    x), chunked ``chunk_boxes`` boxes at a time: the one layout of every collection of boxes
    (extracted subtomograms, datasets, a job's segmentations and densities)."""
    return zarr.create_array(
        str(path), shape=(n, box, box, box), chunks=(chunk_boxes, box, box, box), dtype=dtype,
        compressors=compressor_for(3, "lz4", 5), zarr_format=3,
        dimension_names=("particle", "z", "y", "x"), attributes=attributes)


def write_subtomograms(
    batches: Iterable, n: int, box: int, path: str | os.PathLike, metadata: dict | None = None,
    overwrite: bool = False, batch_chunk: int = 64,
) -> Path:
    """Write a stream of `SubtomogramBatch` (``n`` boxes in all) as a collection.

    ``metadata`` holds per-collection columns (e.g. tomogram, voxel_size_a) added to every row.
    """
    def build(tmp: Path) -> None:
        tmp.mkdir()
        array = create_box_array(tmp / "boxes.zarr", n, box, chunk_boxes=batch_chunk)
        rows, at = [], 0
        for batch in batches:
            array[at:at + len(batch)] = batch.boxes
            rows.append(pd.DataFrame({
                "index": np.arange(at, at + len(batch)), "particle_id": batch.particle_id,
                "z": batch.centres_px[:, 0], "y": batch.centres_px[:, 1],
                "x": batch.centres_px[:, 2], "padded": batch.padded}))
            at += len(batch)
        if at != n:
            raise RuntimeError(f"expected {n} boxes, extraction produced {at}")
        table = pd.concat(rows, ignore_index=True).assign(**(metadata or {}))
        table.to_parquet(tmp / "particles.parquet", index=False)

    return build_output_dir(path, overwrite, build)


def read_subtomograms(path: str | os.PathLike) -> tuple[zarr.Array, pd.DataFrame]:
    """Open a collection: the lazy (N, B, B, B) array and its metadata table."""
    path = Path(path)
    if not (path / "particles.parquet").is_file():
        raise InputError(path, "not a subtomogram collection (no particles.parquet)")
    return zarr.open_array(str(path / "boxes.zarr"), mode="r"), pd.read_parquet(
        path / "particles.parquet")
