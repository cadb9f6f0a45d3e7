"""Reduce stage: discover complexes by clustering DSM-Net's 1024-d features, streamed.

Features are read from a job's ``particles.parquet/`` in record batches (never all in memory):
optionally an IncrementalPCA pass; k-means with k-means++ restarts on a bounded uniform sample
(``fit_sample`` rows) to place the centres; MiniBatchKMeans ``partial_fit`` passes over every
particle starting from them; then a pass that assigns every particle to its nearest centre.
Per cluster: size, composition by predicted class (and by true class when a truth table is
given), mean classifier confidence, and the mean recovered density averaged from
``density.zarr`` in chunk-aligned row blocks (`jobs/discover_unseen.py` scores them by FSC).
Figures: t-SNE of a sample, coloured by cluster and by class; central slices of each cluster's
average density.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import zarr
from pydantic import Field
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import IncrementalPCA

from dsmscale.config import JobConfig
from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic


class DiscoverConfig(JobConfig):
    """Clustering settings of the reduce stage."""

    k: int = Field(22, ge=2, description="clusters (22 as in the paper)")
    batch_rows: int = Field(8192, ge=256, description="feature rows per streamed batch")
    fit_sample: int = Field(20_000, ge=100, description="uniform sample (rows) on which the "
                            "centres are placed by k-means with restarts; bounds the memory")
    n_init: int = Field(10, ge=1, description="k-means++ restarts on the sample (lowest inertia)")
    epochs: int = Field(1, ge=0, description="partial_fit refinement passes over all features")
    minibatch: int = Field(1024, ge=32, description="rows per partial_fit step")
    pca_components: int | None = Field(None, ge=2, description="IncrementalPCA first, if set")
    k_candidates: tuple[int, ...] = Field((8, 12, 16, 22, 28, 36), description="for the k report")
    tsne_sample: int = Field(2000, ge=50)
    seed: int = 0


def feature_batches(job: Path, batch_rows: int, columns=("particle_id", "row", "features")
                    ) -> Iterator[pa.RecordBatch]:
    """Stream the job's particle table in record batches of about ``batch_rows`` rows.

    Parts are written per work unit and may be small; consecutive record batches are joined so
    every yielded batch (but the last) has at least ``batch_rows`` rows.
    """
    parts = job / "particles.parquet"
    files = sorted(parts.glob("*.parquet")) if parts.is_dir() else []
    if not files:
        raise InputError(job, "no particles.parquet parts: not a finished dsmscale run output")
    if "features" not in pq.read_schema(files[0]).names:
        raise InputError(job, "the job's model has no classification head: no features")
    pending, n = [], 0
    # one part file open at a time, read in record batches: memory stays at a few batches
    # whatever the number of parts (a dataset scanner's read-ahead grew with the job)
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=list(columns)):
            pending.append(batch)
            n += batch.num_rows
            if n >= batch_rows:
                yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
                pending, n = [], 0
    if n:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _matrix(batch) -> np.ndarray:
    return np.asarray(batch.column("features").flatten().to_numpy(zero_copy_only=False),
                      dtype=np.float32).reshape(batch.num_rows, -1)


def fit_clusters(job: Path, config: DiscoverConfig, sample: np.ndarray
                 ) -> tuple[KMeans | MiniBatchKMeans, IncrementalPCA | None]:
    """Streaming fit: optional IncrementalPCA pass; centres from k-means (``n_init`` k-means++
    restarts, Lloyd to convergence) on ``sample`` (a uniform sample of the features, see
    `_sample`); ``epochs`` partial_fit passes over all.

    MiniBatchKMeans alone from random seeds lands in poor local minima on these features (a
    class split in two while two others merge), and a one-update-per-batch ``partial_fit``
    barely moves its centres; restarts on a sample fix the first, the passes use every particle.
    """
    pca = None
    if config.pca_components:
        pca = IncrementalPCA(n_components=config.pca_components)
        for batch in feature_batches(job, config.batch_rows):
            if batch.num_rows >= config.pca_components:
                pca.partial_fit(_matrix(batch))
    if len(sample) < config.k:
        raise InputError(job, f"fewer particles than k={config.k} clusters")
    seeds = KMeans(n_clusters=config.k, n_init=config.n_init, random_state=config.seed).fit(
        _project(sample, pca))
    if config.epochs == 0:
        return seeds, pca
    kmeans = MiniBatchKMeans(n_clusters=config.k, init=seeds.cluster_centers_, n_init=1,
                             random_state=config.seed, batch_size=config.minibatch)
    rng = np.random.default_rng(config.seed)
    for _ in range(config.epochs):
        for batch in feature_batches(job, config.batch_rows):
            x = _project(_matrix(batch), pca)[rng.permutation(batch.num_rows)]
            for start in range(0, len(x) - config.k + 1, config.minibatch):
                kmeans.partial_fit(x[start:start + config.minibatch])
    return kmeans, pca


def _project(x: np.ndarray, pca: IncrementalPCA | None) -> np.ndarray:
    return pca.transform(x).astype(np.float32) if pca is not None else x


class ClusterTally:
    """Per-cluster figures accumulated batch by batch: memory O(k × classes + k × B³), not
    O(particles). Sizes, mean classifier score, predicted (and true) class composition,
    particles per tomogram, the sum of recovered densities, and the cluster × true-class
    contingency table behind ARI and NMI."""

    def __init__(self, k: int, box_shape: tuple[int, ...]):
        self.k = k
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

    def add_density(self, density: zarr.Array, rows: np.ndarray, clusters: np.ndarray,
                    block: int) -> None:
        """Sum the recovered boxes of these rows, reading ``density`` in chunk-aligned blocks."""
        order = np.argsort(rows)
        rows, clusters = rows[order], clusters[order]
        for start in np.unique(rows // block) * block:
            sel = (rows >= start) & (rows < start + block)
            chunk, local, members = density[start:start + block], rows[sel] - start, clusters[sel]
            for c in np.unique(members):
                self.density_sum[c] += chunk[local[members == c]].sum(0, dtype=np.float64)

    def averages(self) -> np.ndarray:
        return (self.density_sum / np.maximum(self.size, 1)[:, None, None, None]).astype(np.float32)

    def contingency(self) -> np.ndarray:
        names = sorted({n for counter in self.true for n in counter})
        return np.array([[counter[n] for n in names] for counter in self.true], np.int64)


def agreement(contingency: np.ndarray) -> dict[str, float]:
    """ARI and NMI (arithmetic normalisation, as scikit-learn's defaults) from a clusters ×
    classes contingency table, so no per-particle label arrays are needed."""
    from sklearn.metrics import mutual_info_score

    c = contingency[contingency.sum(1) > 0][:, contingency.sum(0) > 0].astype(np.float64)
    pairs = c * (c - 1) / 2
    n = c.sum()
    rows, cols = c.sum(1), c.sum(0)
    a, b = (rows * (rows - 1) / 2).sum(), (cols * (cols - 1) / 2).sum()
    expected = a * b / (n * (n - 1) / 2)
    top = (a + b) / 2
    ari = 1.0 if top == expected else float((pairs.sum() - expected) / (top - expected))

    def entropy(m: np.ndarray) -> float:
        p = m[m > 0] / n
        return float(-(p * np.log(p)).sum())

    h = (entropy(rows) + entropy(cols)) / 2
    nmi = 1.0 if h == 0 else float(mutual_info_score(None, None, contingency=c) / h)
    return {"ari": ari, "nmi": nmi}


def assign_clusters(job: Path, kmeans, pca, config: DiscoverConfig, out: Path,
                    truth: pd.Series | None = None) -> ClusterTally:
    """Second pass: every particle's nearest centre, written part by part to
    ``out/clusters.parquet/`` (particle_id, row, cluster, distance, class, score, tomogram and
    true_class when ``truth`` maps (tomogram, particle_id) → class), and tallied per cluster."""
    density = zarr.open_array(str(job / "density.zarr"), mode="r")
    tally = ClusterTally(config.k, density.shape[1:])
    parts = out / "clusters.parquet"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    columns = ("particle_id", "row", "features", "class_name", "score", "tomogram")
    for i, batch in enumerate(feature_batches(job, config.batch_rows, columns)):
        d = kmeans.transform(_project(_matrix(batch), pca))
        part = batch.drop_columns(["features"]).to_pandas()
        part["cluster"], part["distance"] = d.argmin(1), d.min(1)
        if truth is not None:
            keys = pd.MultiIndex.from_frame(part[["tomogram", "particle_id"]])
            part["true_class"] = truth.reindex(keys).to_numpy()
        part.to_parquet(parts / f"part-{i:06d}.parquet", index=False)
        tally.add(part)
        tally.add_density(density, part["row"].to_numpy(), part["cluster"].to_numpy(),
                          density.chunks[0])
    return tally


def choose_k_report(job: Path, config: DiscoverConfig, sample: np.ndarray) -> dict[str, float]:
    """Silhouette score on a feature sample for each candidate k (higher is better)."""
    from sklearn.metrics import silhouette_score

    scores = {}
    for k in config.k_candidates:
        if k < len(sample):
            labels = MiniBatchKMeans(n_clusters=k, random_state=config.seed, n_init=3).fit_predict(
                sample)
            scores[str(k)] = float(silhouette_score(sample, labels))
    return scores


def _sample(job: Path, config: DiscoverConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``n`` uniformly drawn particles (each batch keeps its share): their rows in the
    job's arrays (unique across tomograms, unlike particle ids) and their features."""
    rng = np.random.default_rng(config.seed)
    total = pads.dataset(job / "particles.parquet", format="parquet").count_rows()
    share = min(1.0, n / max(total, 1))
    ids, features = [np.empty(0, np.int64)], [np.empty((0, 0), np.float32)]
    for batch in feature_batches(job, config.batch_rows, ("row", "features")):
        keep = rng.random(batch.num_rows) < share
        ids.append(batch.column("row").to_numpy()[keep])
        features.append(_matrix(batch)[keep])
    return np.concatenate(ids), np.concatenate([f for f in features if f.size] or features)


def discover(job: str | Path, config: DiscoverConfig | None = None,
             truth: pd.DataFrame | None = None) -> dict:
    """Cluster a finished job's features; write ``JOB/discovery/`` and return its summary.

    ``truth``: optional (particle_id, class_name) table for composition, ARI and NMI, with a
    ``tomogram`` column (the job's tomogram names) when the job has several tomograms.
    """
    from dsmscale.report.discovery import density_gallery, tsne_figure

    job, config = Path(job), config or DiscoverConfig()
    out = job / "discovery"
    out.mkdir(exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)  # the mark of a finished discovery: not yet
    rows, sample = _sample(job, config, max(config.fit_sample, config.tsne_sample))
    kmeans, pca = fit_clusters(job, config, sample)
    tally = assign_clusters(job, kmeans, pca, config, out, None if truth is None else _truth_map(
        truth, job))
    averages = tally.averages()
    np.save(out / "cluster_averages.npy", averages)
    clusters = [_cluster_entry(tally, c) for c in range(config.k)]
    pick = np.random.default_rng(config.seed).permutation(len(rows))[:config.tsne_sample]
    rows, features = rows[pick], sample[pick]  # for the k report and t-SNE
    summary = {"k": config.k, "particles": int(tally.size.sum()), "clusters": clusters,
               "silhouette_by_k": choose_k_report(job, config, _project(features, pca))
               if len(features) > max(config.k_candidates) else {},
               "per_tomogram": dict(tally.per_tomogram)}
    if truth is not None:
        summary |= agreement(tally.contingency())
    scores = pd.Series(tally.score_sum / np.maximum(tally.size, 1))[tally.size > 0]
    summary["low_confidence_clusters"] = scores[scores < scores.median() * 0.8].index.tolist()
    if len(rows) >= 10:
        labelled = pd.DataFrame({"row": rows}).merge(
            _rows_of(out / "clusters.parquet", rows), on="row", how="left")
        tsne_figure(features, labelled, out / "tsne.png", config.seed)
    density_gallery(averages, tally.size.tolist(), out / "cluster_averages.png")
    write_file_atomic(out / "summary.json",
                      lambda tmp: tmp.write_text(json.dumps(summary, indent=2, default=str)))
    return summary


def _truth_map(truth: pd.DataFrame, job: Path) -> pd.Series:
    """(tomogram, particle_id) → true class; a truth table without ``tomogram`` is taken to be
    the job's only tomogram's."""
    if "tomogram" not in truth:
        names = set().union(*(pq.read_table(f, columns=["tomogram"]).column("tomogram").unique()
                              .to_pylist() for f in (job / "particles.parquet").glob("*.parquet")))
        if len(names) != 1:
            raise InputError(job, f"the job has {len(names)} tomograms and particle ids are per "
                                  "tomogram: the truth table needs a 'tomogram' column")
        truth = truth.assign(tomogram=names.pop())
    keyed = truth.set_index(["tomogram", "particle_id"])["class_name"]
    if keyed.index.has_duplicates:
        raise InputError(job, "the truth table repeats a (tomogram, particle_id) pair")
    return keyed


def _rows_of(parts: Path, rows: np.ndarray) -> pd.DataFrame:
    """The records of a Parquet dataset for these job rows (read filtered, not whole)."""
    import pyarrow.compute as pc

    wanted = pc.field("row").isin(pa.array(rows))
    return pads.dataset(parts, format="parquet").to_table(filter=wanted).to_pandas()


def _cluster_entry(tally: ClusterTally, c: int) -> dict:
    size = int(tally.size[c])
    entry = {"cluster": c, "size": size,
             "mean_score": float(tally.score_sum[c] / size) if size else None,
             "predicted": dict(tally.predicted[c].most_common(3))}
    if tally.true[c]:
        entry["true"] = dict(tally.true[c].most_common(3))
    return entry
