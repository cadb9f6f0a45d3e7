"""A job folder (what ``dsmscale run`` writes): every path in it, and the readers of its parts.

Layout of ``JOB``::

    config.json              the run's config
    tomograms/NAME.zarr      MRC inputs converted to OME-Zarr
    plan/                    the saved work units (`dsmscale.pipeline.plan`)
    segmentation.zarr        uint8 (N, B, B, B) predicted masks, one box per particle
    density.zarr             float32 (N, B, B, B) recovered densities (Da per voxel)
    particles.parquet/       one Parquet part per finished work unit: ids, tomogram, coordinates
                             (pixels and Å), box_index (into the two arrays), class, score,
                             probabilities, 1024-d features
    NAME_particles.star      RELION 3.1-style table per tomogram
    relion5/                 RELION 5 set of every tomogram (particles, tomograms, optimisation)
    copick/                  copick project: config, picks per tomogram and class
    maps/NAME_{labels,density}.zarr   tomogram-scale OME-Zarr maps (napari)
    discovery/               the reduce stage: summary.json, clusters.parquet/, averages (plain and
                             aligned), figures
    report.md
    summary.json             written last: the mark of a finished job

Every reader streams the Parquet parts (one part or one record batch at a time), so none holds
all particles.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import zarr

from dsmscale.errors import InputError

#: The per-particle columns read by default: all but the wide probabilities and features.
TABLE_COLUMNS = ["particle_id", "tomogram", "unit_id", "box_index", "z", "y", "x", "z_a", "y_a",
                 "x_a", "padded", "class_index", "class_name", "score"]


def read_parts(folder: Path, columns: list[str] | None = None,
               where: pads.Expression | None = None) -> pd.DataFrame:
    """The rows of a folder of Parquet parts that ``where`` selects (all without it)."""
    return pads.dataset(folder, format="parquet").to_table(columns=columns, filter=where
                                                           ).to_pandas()


@dataclass(frozen=True)
class JobFolder:
    """The folder of one ``dsmscale run`` job."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # -------------------------------------------------------------------------------- paths
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def tomograms(self) -> Path:
        return self.root / "tomograms"

    def converted(self, name: str) -> Path:
        """Where the MRC input ``name`` is converted to."""
        return self.tomograms / f"{name}.zarr"

    @property
    def plan(self) -> Path:
        return self.root / "plan"

    @property
    def segmentation(self) -> Path:
        return self.root / "segmentation.zarr"

    @property
    def density(self) -> Path:
        return self.root / "density.zarr"

    @property
    def parts(self) -> Path:
        """The folder of per-unit Parquet parts (``particles.parquet/``)."""
        return self.root / "particles.parquet"

    def part(self, unit_id: str) -> Path:
        return self.parts / f"{unit_id}.parquet"

    def star(self, name: str) -> Path:
        return self.root / f"{name}_particles.star"

    @property
    def copick(self) -> Path:
        return self.root / "copick"

    @property
    def relion5(self) -> Path:
        """The job's RELION 5 set: particles.star, tomograms.star, optimisation_set.star."""
        return self.root / "relion5"

    def map(self, name: str, kind: str) -> Path:
        """The tomogram-scale OME-Zarr map of ``kind`` (labels or density) of tomogram ``name``."""
        return self.root / "maps" / f"{name}_{kind}.zarr"

    @property
    def discovery(self) -> Path:
        return self.root / "discovery"

    @property
    def discovery_summary(self) -> Path:
        return self.discovery / "summary.json"

    @property
    def clusters(self) -> Path:
        """The discovery's per-particle assignments, one Parquet part per batch."""
        return self.discovery / "clusters.parquet"

    @property
    def cluster_averages(self) -> Path:
        """Each cluster's plain mean recovered density (k, B, B, B): no alignment."""
        return self.discovery / "cluster_averages.npy"

    @property
    def aligned_cluster_averages(self) -> Path:
        """Each cluster's reference-free average of a sample of its members (k, B, B, B)."""
        return self.discovery / "cluster_averages_aligned.npy"

    @property
    def tsne(self) -> Path:
        """The t-SNE figure of a sample of the features, by cluster and by class."""
        return self.discovery / "tsne.png"

    @property
    def cluster_gallery(self) -> Path:
        """The figure of every cluster's average recovered density."""
        return self.discovery / "cluster_averages.png"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    # ------------------------------------------------------------------------------ readers
    def is_finished(self) -> bool:
        """Whether the job ran to its end (its ``summary.json`` is written last)."""
        return self.summary.is_file()

    def part_files(self) -> list[Path]:
        """The finished units' Parquet parts, in name order."""
        return sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else []

    def finished_units(self) -> set[str]:
        """The ids of the work units whose Parquet part exists (the mark of a finished unit)."""
        return {path.stem for path in self.part_files()}

    def columns(self) -> list[str]:
        """The per-particle columns the parts hold (none before a unit has finished)."""
        files = self.part_files()
        return pq.read_schema(files[0]).names if files else []

    def read_particles(self, columns: list[str] | None = None,
                       tomogram: str | None = None) -> pd.DataFrame:
        """The per-particle table (every finished part, or one tomogram's rows), without the
        wide probabilities and features unless ``columns`` names them."""
        available = self.columns()
        columns = columns or [c for c in TABLE_COLUMNS if c in available]
        where = None if tomogram is None else pads.field("tomogram") == tomogram
        return read_parts(self.parts, columns, where)

    def count(self) -> int:
        """Particles in the finished parts."""
        return sum(pq.read_metadata(path).num_rows for path in self.part_files())

    def value_counts(self, column: str) -> Counter:
        """Value → particles of one column, streamed over the parts (empty without it)."""
        counts: Counter = Counter()
        if column not in self.columns():
            return counts
        for batch in self.record_batches(65536, [column]):
            for item in batch.column(column).value_counts().to_pylist():
                counts[item["values"]] += item["counts"]
        return counts

    def tomogram_names(self) -> set[str]:
        """The names of the tomograms the finished parts hold."""
        return set(self.value_counts("tomogram"))

    def record_batches(self, batch_rows: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """The parts' ``columns`` in record batches of about ``batch_rows`` rows.

        Parts are written per work unit and may be small; consecutive record batches are joined
        so every yielded batch (but the last) has at least ``batch_rows`` rows. One part file is
        open at a time, so memory stays at a few batches whatever the number of parts (a
        dataset scanner's read-ahead grew with the job).
        """
        files = self.part_files()
        if not files:
            raise InputError(self.root, "no particles.parquet parts: not a finished dsmscale "
                                        "run output")
        pending, n = [], 0
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows,
                                                           columns=columns):
                pending.append(batch)
                n += batch.num_rows
                if n >= batch_rows:
                    yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
                    pending, n = [], 0
        if n:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]

    def open_density(self) -> zarr.Array:
        """The recovered densities (N, B, B, B), read-only."""
        return zarr.open_array(str(self.density), mode="r")

    def open_segmentation(self) -> zarr.Array:
        """The predicted masks (N, B, B, B), read-only."""
        return zarr.open_array(str(self.segmentation), mode="r")
