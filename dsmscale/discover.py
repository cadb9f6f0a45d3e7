"""Reduce stage: discover complexes by clustering DSM-Net's 1024-d features, streamed.

Features are read from a job's ``particles.parquet/`` in record batches (never all in memory):
optionally an IncrementalPCA pass, then MiniBatchKMeans ``partial_fit`` passes, then a pass that
assigns every particle to its nearest centre. Per cluster: size, composition by predicted class
(and by true class when a truth table is given), mean classifier confidence, and the mean
recovered density averaged from ``density.zarr`` in chunk-aligned row blocks; FSC against a
reference map when one is given. Figures: t-SNE of a sample, coloured by cluster and by class;
central slices of each cluster's average density.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import zarr
from pydantic import Field
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import IncrementalPCA

from dsmscale.config import JobConfig
from dsmscale.errors import InputError
from dsmscale.metrics import fsc_curve, fsc_resolution


class DiscoverConfig(JobConfig):
    """Clustering settings of the reduce stage."""

    k: int = Field(22, ge=2, description="clusters (22 as in the paper)")
    batch_rows: int = Field(8192, ge=256, description="feature rows per streamed batch")
    epochs: int = Field(3, ge=1, description="partial_fit passes over the features")
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
    if not parts.is_dir() or not any(parts.glob("*.parquet")):
        raise InputError(job, "no particles.parquet parts: not a finished dsmscale run output")
    dataset = pads.dataset(parts, format="parquet")
    if "features" not in dataset.schema.names:
        raise InputError(job, "the job's model has no classification head: no features")
    pending, n = [], 0
    # small read-ahead: memory stays at a few batches whatever the number of parts
    for batch in dataset.to_batches(columns=list(columns), batch_size=batch_rows,
                                    batch_readahead=1, fragment_readahead=1):
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


def fit_clusters(job: Path, config: DiscoverConfig) -> tuple[MiniBatchKMeans, IncrementalPCA | None]:
    """Streaming fit: optional IncrementalPCA pass, then ``epochs`` partial_fit passes."""
    pca = None
    if config.pca_components:
        pca = IncrementalPCA(n_components=config.pca_components)
        for batch in feature_batches(job, config.batch_rows):
            if batch.num_rows >= config.pca_components:
                pca.partial_fit(_matrix(batch))
    kmeans = MiniBatchKMeans(n_clusters=config.k, random_state=config.seed, n_init=3,
                             batch_size=min(config.batch_rows, 4096))
    for _ in range(config.epochs):
        for batch in feature_batches(job, config.batch_rows):
            x = _project(_matrix(batch), pca)
            if len(x) >= config.k:
                kmeans.partial_fit(x)
    if not hasattr(kmeans, "cluster_centers_"):
        raise InputError(job, f"fewer particles than k={config.k} clusters")
    return kmeans, pca


def _project(x: np.ndarray, pca: IncrementalPCA | None) -> np.ndarray:
    return pca.transform(x).astype(np.float32) if pca is not None else x


def assign_clusters(job: Path, kmeans, pca, config: DiscoverConfig) -> pd.DataFrame:
    """Second pass: nearest centre for every particle (particle_id, row, cluster, distance)."""
    out = []
    for batch in feature_batches(job, config.batch_rows):
        x = _project(_matrix(batch), pca)
        d = kmeans.transform(x)
        out.append(pd.DataFrame({"particle_id": batch.column("particle_id").to_numpy(),
                                 "row": batch.column("row").to_numpy(),
                                 "cluster": d.argmin(1), "distance": d.min(1)}))
    return pd.concat(out, ignore_index=True)


def cluster_averages(job: Path, assignment: pd.DataFrame, k: int, block: int = 64) -> np.ndarray:
    """(k, B, B, B) mean recovered density per cluster, reading density.zarr block by block."""
    density = zarr.open_array(str(job / "density.zarr"), mode="r")
    sums = np.zeros((k,) + density.shape[1:], np.float64)
    counts = np.zeros(k, np.int64)
    order = assignment.sort_values("row")
    rows, clusters = order["row"].to_numpy(), order["cluster"].to_numpy()
    for start in range(0, int(rows.max()) + 1 if len(rows) else 0, block):
        sel = (rows >= start) & (rows < start + block)
        if not sel.any():
            continue
        chunk = density[start:start + block]
        for row, cluster in zip(rows[sel] - start, clusters[sel], strict=True):
            sums[cluster] += chunk[row]
            counts[cluster] += 1
    return (sums / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32)


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


def _sample(job: Path, config: DiscoverConfig) -> pd.DataFrame:
    """A uniform random sample of rows (reservoir-free: keep each batch's share)."""
    rng = np.random.default_rng(config.seed)
    total = pads.dataset(job / "particles.parquet", format="parquet").count_rows()
    share = min(1.0, config.tsne_sample / max(total, 1))
    picked = []
    for batch in feature_batches(job, config.batch_rows, ("particle_id", "features")):
        keep = rng.random(batch.num_rows) < share
        if keep.any():
            picked.append(pd.DataFrame({"particle_id": batch.column("particle_id").to_numpy()[keep],
                                        "features": list(_matrix(batch)[keep])}))
    return pd.concat(picked, ignore_index=True) if picked else pd.DataFrame()


def discover(job: str | Path, config: DiscoverConfig | None = None,
             truth: pd.DataFrame | None = None, references: dict[str, np.ndarray] | None = None,
             voxel_size_nm: float = 1.0) -> dict:
    """Cluster a finished job's features; write ``JOB/discovery/`` and return its summary.

    ``truth``: optional (particle_id, class_name) table for composition, ARI and NMI.
    ``references``: optional {class_name: (B, B, B) map} for FSC of the cluster averages.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from dsmscale.report.discovery import density_gallery, tsne_figure

    job, config = Path(job), config or DiscoverConfig()
    out = job / "discovery"
    out.mkdir(exist_ok=True)
    kmeans, pca = fit_clusters(job, config)
    assignment = assign_clusters(job, kmeans, pca, config)
    table = pd.read_parquet(job / "particles.parquet",
                            columns=["particle_id", "class_name", "score", "tomogram"])
    assignment = assignment.merge(table, on="particle_id", how="left")
    if truth is not None:
        assignment = assignment.merge(truth.rename(columns={"class_name": "true_class"}),
                                      on="particle_id", how="left")
    assignment.to_parquet(out / "clusters.parquet", index=False)
    averages = cluster_averages(job, assignment, config.k)
    np.save(out / "cluster_averages.npy", averages)
    clusters = []
    for c in range(config.k):
        rows = assignment[assignment["cluster"] == c]
        entry = {"cluster": c, "size": len(rows),
                 "mean_score": float(rows["score"].mean()) if len(rows) else None,
                 "predicted": rows["class_name"].value_counts().head(3).to_dict()}
        if truth is not None:
            entry["true"] = rows["true_class"].value_counts().head(3).to_dict()
        for name, ref in (references or {}).items():
            curve = fsc_curve(averages[c], ref)
            entry.setdefault("fsc_nm", {})[name] = fsc_resolution(curve, ref.shape[0],
                                                                  voxel_size_nm)
        clusters.append(entry)
    sample = _sample(job, config)
    features = np.stack(sample["features"]) if len(sample) else np.empty((0, 1))
    summary = {"k": config.k, "particles": len(assignment), "clusters": clusters,
               "silhouette_by_k": choose_k_report(job, config, _project(features, pca))
               if len(features) > max(config.k_candidates) else {},
               "per_tomogram": assignment.groupby("tomogram").size().to_dict()}
    if truth is not None:
        known = assignment.dropna(subset=["true_class"])
        summary["ari"] = float(adjusted_rand_score(known["true_class"], known["cluster"]))
        summary["nmi"] = float(normalized_mutual_info_score(known["true_class"], known["cluster"]))
    scores = assignment.groupby("cluster")["score"].mean()
    summary["low_confidence_clusters"] = scores[scores < scores.median() * 0.8].index.tolist()
    if len(sample) >= 10:
        labelled = sample.merge(assignment, on="particle_id")
        tsne_figure(np.stack(labelled["features"]), labelled, out / "tsne.png", config.seed)
    density_gallery(averages, [c["size"] for c in clusters], out / "cluster_averages.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
