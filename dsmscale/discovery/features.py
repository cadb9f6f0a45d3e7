"""A job's 1024-d features, streamed: record batches as float32 matrices, an optional PCA
projection, and a uniform sample."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from sklearn.decomposition import IncrementalPCA

from dsmscale.discovery.config import DiscoverConfig
from dsmscale.errors import InputError
from dsmscale.io.job import JobFolder


def feature_batches(job: JobFolder, batch_rows: int,
                    columns: tuple[str, ...] = ("particle_id", "box_index", "features")
                    ) -> Iterator[pa.RecordBatch]:
    """The job's particles with their features, in record batches of about ``batch_rows``."""
    if job.part_files() and "features" not in job.columns():
        raise InputError(job.root, "the job's model has no classification head: no features")
    return job.record_batches(batch_rows, list(columns))


def feature_matrix(batch: pa.RecordBatch) -> np.ndarray:
    """A batch's ``features`` column as an (n, 1024) float32 matrix."""
    return np.asarray(batch.column("features").flatten().to_numpy(zero_copy_only=False),
                      dtype=np.float32).reshape(batch.num_rows, -1)


def project(x: np.ndarray, pca: IncrementalPCA | None) -> np.ndarray:
    """``x`` in the PCA's components (unchanged without one)."""
    return pca.transform(x).astype(np.float32) if pca is not None else x


def uniform_sample(job: JobFolder, config: DiscoverConfig, n: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """About ``n`` uniformly drawn particles (each batch keeps its share): their box indexes
    (unique across tomograms, unlike particle ids) and their features."""
    rng = np.random.default_rng(config.seed)
    share = min(1.0, n / max(job.count(), 1))
    boxes, features = [np.empty(0, np.int64)], [np.empty((0, 0), np.float32)]
    for batch in feature_batches(job, config.batch_rows, ("box_index", "features")):
        keep = rng.random(batch.num_rows) < share
        boxes.append(batch.column("box_index").to_numpy()[keep])
        features.append(feature_matrix(batch)[keep])
    return np.concatenate(boxes), np.concatenate([f for f in features if f.size] or features)
