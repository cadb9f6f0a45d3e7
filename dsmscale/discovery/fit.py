"""Fitting the clusters, streamed: an optional IncrementalPCA pass, k-means with restarts on a
uniform sample to place the centres, MiniBatchKMeans ``partial_fit`` passes over every particle;
and the silhouette report that helps choose k."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import IncrementalPCA

from dsmscale.discovery.config import DiscoverConfig
from dsmscale.discovery.features import feature_batches, feature_matrix, project
from dsmscale.errors import InputError
from dsmscale.io.job import JobFolder


def fit_clusters(job: JobFolder, config: DiscoverConfig, sample: np.ndarray
                 ) -> tuple[KMeans | MiniBatchKMeans, IncrementalPCA | None]:
    """Streaming fit: optional IncrementalPCA pass; centres from k-means (``n_init`` k-means++
    restarts, Lloyd to convergence) on ``sample`` (a uniform sample of the features, see
    `dsmscale.discovery.features.uniform_sample`); ``epochs`` partial_fit passes over all.

    MiniBatchKMeans alone from random seeds lands in poor local minima on these features (a
    class split in two while two others merge), and a one-update-per-batch ``partial_fit``
    barely moves its centres; restarts on a sample fix the first, the passes use every particle.
    """
    pca = None
    if config.pca_components:
        pca = IncrementalPCA(n_components=config.pca_components)
        for batch in feature_batches(job, config.batch_rows):
            if batch.num_rows >= config.pca_components:
                pca.partial_fit(feature_matrix(batch))
    if len(sample) < config.k:
        raise InputError(job.root, f"fewer particles than k={config.k} clusters")
    seeds = KMeans(n_clusters=config.k, n_init=config.n_init, random_state=config.seed).fit(
        project(sample, pca))
    if config.epochs == 0:
        return seeds, pca
    kmeans = MiniBatchKMeans(n_clusters=config.k, init=seeds.cluster_centers_, n_init=1,
                             random_state=config.seed, batch_size=config.minibatch)
    rng = np.random.default_rng(config.seed)
    for _ in range(config.epochs):
        for batch in feature_batches(job, config.batch_rows):
            x = project(feature_matrix(batch), pca)[rng.permutation(batch.num_rows)]
            for start in range(0, len(x) - config.k + 1, config.minibatch):
                kmeans.partial_fit(x[start:start + config.minibatch])
    return kmeans, pca


def silhouette_by_k(config: DiscoverConfig, sample: np.ndarray) -> dict[str, float]:
    """Silhouette score on a feature sample for each candidate k (higher is better)."""
    from sklearn.metrics import silhouette_score

    scores = {}
    for k in config.k_candidates:
        if k < len(sample):
            labels = MiniBatchKMeans(n_clusters=k, random_state=config.seed, n_init=3).fit_predict(
                sample)
            scores[str(k)] = float(silhouette_score(sample, labels))
    return scores
