"""``dsmscale discover``, the reduce stage: discover complexes by clustering DSM-Net's 1024-d
features, streamed.

Features are read from a job's ``particles.parquet/`` in record batches (never all in memory,
`features`): optionally an IncrementalPCA pass; k-means with k-means++ restarts on a bounded
uniform sample (``fit_sample`` rows) to place the centres; MiniBatchKMeans ``partial_fit`` passes
over every particle starting from them (`fit`); then a pass that assigns every particle to its
nearest centre and tallies, per cluster, its size, composition by predicted class (and by true
class when a truth table is given), mean classifier confidence, and the mean recovered density
averaged from ``density.zarr`` in chunk-aligned blocks (`tally`). That plain mean is a
rotational blur (the particles lie in random orientations): each cluster's densities are also
averaged with reference-free alignment (`dsmscale.averaging.reference_free_average`), over a
uniform sample of at most ``align_members`` members drawn in the same pass (clusters of at least
``align_min_size``). Figures: t-SNE of a
sample, coloured by cluster and by class; central slices of each cluster's average density
(the aligned one, where computed).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from dsmscale.averaging import average_recovered_reference_free
from dsmscale.discovery.config import DiscoverConfig
from dsmscale.discovery.features import project, uniform_sample
from dsmscale.discovery.fit import fit_clusters, silhouette_by_k
from dsmscale.discovery.tally import ClusterTally, assign_clusters
from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.job import JobFolder, read_parts
from dsmscale.metrics import agreement

__all__ = ["DiscoverConfig", "cluster_members", "discover"]


def discover(job: str | os.PathLike | JobFolder, config: DiscoverConfig | None = None,
             truth: pd.DataFrame | None = None) -> dict:
    """Cluster a finished job's features; write ``JOB/discovery/`` and return its summary.

    ``truth``: optional (particle_id, class_name) table for composition, ARI and NMI, with a
    ``tomogram`` column (the job's tomogram names) when the job has several tomograms.
    """
    job = job if isinstance(job, JobFolder) else JobFolder(job)
    config = config or DiscoverConfig()
    if job.part_files() and "box_index" not in job.columns():
        raise InputError(job.root, "a job made by an older dsmscale (its particles have no "
                                   "box_index): run the job again into a new folder")
    job.discovery.mkdir(exist_ok=True)
    job.discovery_summary.unlink(missing_ok=True)  # the mark of a finished discovery: not yet
    boxes, sample = uniform_sample(job, config, max(config.fit_sample, config.tsne_sample))
    kmeans, pca = fit_clusters(job, config, sample)
    tally = assign_clusters(job, kmeans, pca, config,
                            None if truth is None else _truth_by_particle(truth, job))
    averages = tally.averages()
    np.save(job.cluster_averages, averages)
    job.aligned_cluster_averages.unlink(missing_ok=True)
    alignment_scores = {}
    if config.align_members:
        averages, alignment_scores = _aligned_averages(job, tally, averages,
                                                       config.align_min_size)
        np.save(job.aligned_cluster_averages, averages)
    pick = np.random.default_rng(config.seed).permutation(len(boxes))[:config.tsne_sample]
    boxes, features = boxes[pick], project(sample[pick], pca)  # for the k report and t-SNE
    summary = _summary(tally, config, features, truth is not None, alignment_scores)
    _figures(job, config, tally, averages, boxes, sample[pick])
    write_file_atomic(job.discovery_summary,
                      lambda tmp: tmp.write_text(json.dumps(summary, indent=2, default=str)))
    return summary


def _aligned_averages(job: JobFolder, tally: ClusterTally, plain: np.ndarray,
                      min_size: int) -> tuple[np.ndarray, dict[int, float]]:
    """Each cluster's reference-free average over its sampled members, and the mean
    correlation of its members with it (last round); a cluster of fewer than ``min_size``
    members keeps its plain mean."""
    averages, scores = plain.copy(), {}
    for c in range(tally.k):
        if tally.size[c] >= min_size:
            members = pd.DataFrame({"box_index": tally.sample(c)})
            result = average_recovered_reference_free(job, members)
            averages[c], scores[c] = result.average, result.round_scores[-1]
    return averages, scores


def _summary(tally: ClusterTally, config: DiscoverConfig, features: np.ndarray,
             with_truth: bool, alignment_scores: dict[int, float]) -> dict:
    """The clusters (with the mean correlation of the members aligned for their average), the
    silhouette by k, particles per tomogram, ARI and NMI against the truth, and the clusters the
    classifier is unsure about (mean score below 0.8 × the median)."""
    clusters = [_cluster_entry(tally, c) for c in range(config.k)]
    for c, score in alignment_scores.items():
        clusters[c] |= {"aligned_members": len(tally.sample(c)), "alignment_score": score}
    summary = {"k": config.k, "particles": int(tally.size.sum()), "clusters": clusters,
               "silhouette_by_k": silhouette_by_k(config, features)
               if len(features) > max(config.k_candidates) else {},
               "per_tomogram": dict(tally.per_tomogram)}
    if with_truth:
        summary |= agreement(tally.contingency())
    scores = pd.Series(tally.score_sum / np.maximum(tally.size, 1))[tally.size > 0]
    summary["low_confidence_clusters"] = scores[scores < scores.median() * 0.8].index.tolist()
    return summary


def _figures(job: JobFolder, config: DiscoverConfig, tally: ClusterTally, averages: np.ndarray,
             boxes: np.ndarray, features: np.ndarray) -> None:
    """t-SNE of the sampled particles' features, and every cluster's average density."""
    from dsmscale.report.discovery import density_gallery, tsne_figure

    if len(boxes) >= 10:
        wanted = pads.field("box_index").isin(pa.array(boxes))
        labelled = pd.DataFrame({"box_index": boxes}).merge(
            read_parts(job.clusters, where=wanted), on="box_index", how="left")
        tsne_figure(features, labelled, job.tsne, config.seed)
    density_gallery(averages, tally.size.tolist(), job.cluster_gallery)


def _truth_by_particle(truth: pd.DataFrame, job: JobFolder) -> pd.Series:
    """(tomogram, particle_id) → true class; a truth table without ``tomogram`` is taken to be
    the job's only tomogram's."""
    if "tomogram" not in truth:
        names = job.tomogram_names()
        if len(names) != 1:
            raise InputError(job.root, f"the job has {len(names)} tomograms and particle ids "
                                       "are per tomogram: the truth table needs a 'tomogram' "
                                       "column")
        truth = truth.assign(tomogram=names.pop())
    keyed = truth.set_index(["tomogram", "particle_id"])["class_name"]
    if keyed.index.has_duplicates:
        raise InputError(job.root, "the truth table repeats a (tomogram, particle_id) pair")
    return keyed


def _cluster_entry(tally: ClusterTally, c: int) -> dict:
    size = int(tally.size[c])
    entry = {"cluster": c, "size": size,
             "mean_score": float(tally.score_sum[c] / size) if size else None,
             "predicted": dict(tally.predicted[c].most_common(3))}
    if tally.true[c]:
        entry["true"] = dict(tally.true[c].most_common(3))
    return entry


def cluster_members(job: JobFolder, cluster: int) -> pd.DataFrame:
    """The particles of one cluster of a finished discovery, with their job columns (box index,
    coordinates, predicted class, ...)."""
    members = read_parts(job.clusters, ["particle_id", "tomogram", "cluster"],
                         pads.field("cluster") == cluster)
    return members.merge(job.read_particles(), on=["tomogram", "particle_id"])
