"""Per-cluster figures accumulated batch by batch, and the pass that assigns every particle to
its cluster and tallies it."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pandas as pd
import zarr
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import IncrementalPCA

from dsmscale.discovery.config import DiscoverConfig
from dsmscale.discovery.features import feature_batches, feature_matrix, project
from dsmscale.io.job import JobFolder


class ClusterTally:
    """Per-cluster figures accumulated batch by batch: memory O(k × classes + k × B³ + k ×
    ``sample_size``), not O(particles). Sizes, mean classifier score, predicted (and true) class
    composition, particles per tomogram, the sum of recovered densities, a uniform sample of
    each cluster's box indexes (at most ``sample_size``, seeded), and the cluster × true-class
    contingency table behind ARI and NMI."""

    def __init__(self, k: int, box_shape: tuple[int, ...], sample_size: int = 0, seed: int = 0):
        self.k = k
        self.sample_size = sample_size
        self._rng = np.random.default_rng(seed)
        self._sample = pd.DataFrame({"cluster": np.empty(0, np.int64),
                                     "box_index": np.empty(0, np.int64), "key": np.empty(0)})
        self.size = np.zeros(k, np.int64)
        self.score_sum = np.zeros(k)
        self.predicted = [Counter() for _ in range(k)]
        self.true = [Counter() for _ in range(k)]
        self.per_tomogram: Counter = Counter()
        self.density_sum = np.zeros((k, *box_shape))

    def add(self, part: pd.DataFrame) -> None:
        clusters = part["cluster"].to_numpy()
        self.size += np.bincount(clusters, minlength=self.k)
        self.score_sum += np.bincount(clusters, weights=part["score"].to_numpy(), minlength=self.k)
        self.per_tomogram.update(part["tomogram"].value_counts().to_dict())
        for (c, name), n in part.groupby(["cluster", "class_name"]).size().items():
            self.predicted[c][name] += int(n)
        if "true_class" in part:
            for (c, name), n in part.groupby(["cluster", "true_class"]).size().items():
                self.true[c][name] += int(n)
        if self.sample_size:  # each cluster's rows of lowest random key: a uniform sample
            keyed = part[["cluster", "box_index"]].assign(key=self._rng.random(len(part)))
            self._sample = pd.concat([self._sample, keyed]).sort_values("key").groupby(
                "cluster").head(self.sample_size)

    def sample(self, c: int) -> np.ndarray:
        """The sampled box indexes of cluster ``c``, sorted."""
        return np.sort(self._sample.loc[self._sample["cluster"] == c, "box_index"].to_numpy())

    def add_density(self, density: zarr.Array, boxes: np.ndarray, clusters: np.ndarray,
                    block: int) -> None:
        """Sum the recovered densities of these box indexes, reading ``density`` in
        chunk-aligned blocks."""
        order = np.argsort(boxes)
        boxes, clusters = boxes[order], clusters[order]
        for start in np.unique(boxes // block) * block:
            sel = (boxes >= start) & (boxes < start + block)
            chunk, local, members = density[start:start + block], boxes[sel] - start, clusters[sel]
            for c in np.unique(members):
                self.density_sum[c] += chunk[local[members == c]].sum(0, dtype=np.float64)

    def averages(self) -> np.ndarray:
        return (self.density_sum / np.maximum(self.size, 1)[:, None, None, None]).astype(np.float32)

    def contingency(self) -> np.ndarray:
        names = sorted({n for counter in self.true for n in counter})
        return np.array([[counter[n] for n in names] for counter in self.true], np.int64)


def assign_clusters(job: JobFolder, kmeans: KMeans | MiniBatchKMeans, pca: IncrementalPCA | None,
                    config: DiscoverConfig, truth: pd.Series | None = None) -> ClusterTally:
    """Second pass: every particle's nearest centre, written part by part to the job's
    ``discovery/clusters.parquet/`` (particle_id, box_index, cluster, distance, class, score,
    tomogram, and true_class when ``truth`` maps (tomogram, particle_id) → class), and tallied
    per cluster."""
    density = job.open_density()
    tally = ClusterTally(config.k, density.shape[1:], config.align_members, config.seed)
    shutil.rmtree(job.clusters, ignore_errors=True)
    job.clusters.mkdir(parents=True)
    columns = ("particle_id", "box_index", "features", "class_name", "score", "tomogram")
    for i, batch in enumerate(feature_batches(job, config.batch_rows, columns)):
        d = kmeans.transform(project(feature_matrix(batch), pca))
        part = batch.drop_columns(["features"]).to_pandas()
        part["cluster"], part["distance"] = d.argmin(1), d.min(1)
        if truth is not None:
            keys = pd.MultiIndex.from_frame(part[["tomogram", "particle_id"]])
            part["true_class"] = truth.reindex(keys).to_numpy()
        part.to_parquet(job.clusters / f"part-{i:06d}.parquet", index=False)
        tally.add(part)
        tally.add_density(density, part["box_index"].to_numpy(), part["cluster"].to_numpy(),
                          density.chunks[0])
    return tally
