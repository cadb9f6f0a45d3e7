"""Streaming k-means and cluster averaging on small synthetic job outputs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from dsmscale.cli import main
from dsmscale.discovery import DiscoverConfig, discover
from dsmscale.errors import InputError
from dsmscale.io.particles import make_particles, write_csv


def fake_job(root: Path, n_per: int = 120, k: int = 3, box: int = 8,
             tomograms: int = 1) -> pd.DataFrame:
    """A job output with k well-separated feature clusters and a constant density per cluster,
    spread over several Parquet parts (like work units); part i belongs to tomogram i mod
    ``tomograms``, whose particle ids start at 0 (as picked tables do). The classifier's score
    is 0.9, and 0.3 for the last class."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(k, 1024))
    truth = np.repeat(np.arange(k), n_per)
    rng.shuffle(truth)
    features = centres[truth] + rng.normal(0, 1, size=(len(truth), 1024))
    density = zarr.create_array(str(root / "density.zarr"), shape=(len(truth), box, box, box),
                                chunks=(64, box, box, box), dtype="float32")
    density[:] = np.broadcast_to((truth + 1.0)[:, None, None, None],
                                 (len(truth), box, box, box)).astype(np.float32)
    (root / "particles.parquet").mkdir()
    ids, names, next_id = [], [], [0] * tomograms
    for part, start in enumerate(range(0, len(truth), 50)):
        sl = slice(start, start + 50)
        n = len(truth[sl])
        feats = features[sl].astype(np.float32)
        tomo = part % tomograms
        ids.append(np.arange(next_id[tomo], next_id[tomo] + n))
        names += [f"t{tomo}"] * n
        next_id[tomo] += n
        pq.write_table(pa.table({
            "particle_id": ids[-1], "box_index": np.arange(start, start + n),
            "tomogram": names[start:], "class_name": [f"c{c}" for c in truth[sl]],
            "score": np.where(truth[sl] == k - 1, 0.3, 0.9),
            "features": pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), 1024)}),
            root / "particles.parquet" / f"u{part:03d}.parquet")
    (root / "summary.json").write_text("{}")  # the mark of a finished job
    return pd.DataFrame({"particle_id": np.concatenate(ids), "tomogram": names,
                         "class_name": [f"c{c}" for c in truth]})


def test_discover_needs_a_finished_job_and_a_truth_table_with_classes(tmp_path, capsys):
    fake_job(tmp_path)
    write_csv(make_particles(np.zeros((3, 3)), "t0", 10.0), tmp_path / "truth.csv")
    assert main(["discover", str(tmp_path), "--truth", str(tmp_path / "truth.csv")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"dsmscale discover: error: {tmp_path / 'truth.csv'}: the truth table has no class names "
        "(a class_name column, or rlnClassName in STAR)")
    (tmp_path / "summary.json").unlink()  # an unfinished (or crashed) job
    assert main(["discover", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"dsmscale discover: error: {tmp_path}: not a finished dsmscale run (no summary.json): "
        "run or resume the job first")
    assert not (tmp_path / "discovery").exists()


def test_streaming_kmeans_recovers_clusters_and_averages(tmp_path):
    truth = fake_job(tmp_path)
    summary = discover(tmp_path, DiscoverConfig(k=3, batch_rows=256, tsne_sample=100,
                                                k_candidates=(2, 3, 4)), truth=truth)
    assert summary["ari"] > 0.99 and summary["nmi"] > 0.99
    clusters = pd.read_parquet(tmp_path / "discovery" / "clusters.parquet")
    assert len(clusters) == len(truth) and clusters["particle_id"].is_unique
    averages = np.load(tmp_path / "discovery" / "cluster_averages.npy")
    for c in range(3):  # each cluster's average density is its class's constant
        members = clusters[clusters["cluster"] == c]
        expected = float(members["true_class"].str[1:].astype(int).iloc[0] + 1)
        np.testing.assert_allclose(averages[c], expected)
    aligned = np.load(tmp_path / "discovery" / "cluster_averages_aligned.npy")
    for c in range(3):  # aligned without a reference: constant boxes stay constant inside
        np.testing.assert_allclose(aligned[c, 3:5, 3:5, 3:5], averages[c, 3:5, 3:5, 3:5],
                                   rtol=1e-5)
    assert all(e["aligned_members"] == 100 for e in summary["clusters"])  # a sample of 120
    assert max(summary["silhouette_by_k"], key=summary["silhouette_by_k"].get) == "3"
    assert (tmp_path / "discovery" / "tsne.png").is_file()
    for entry in summary["clusters"]:  # one class per cluster, predicted and true
        (name, n), = entry["predicted"].items()
        assert entry["true"] == {name: n} and n == entry["size"] == 120
        assert entry["mean_score"] == pytest.approx(0.3 if name == "c2" else 0.9)
    c2 = next(e["cluster"] for e in summary["clusters"] if "c2" in e["predicted"])
    assert summary["low_confidence_clusters"] == [c2]


def test_several_tomograms_with_the_same_particle_ids(tmp_path):
    truth = fake_job(tmp_path, n_per=100, tomograms=2)
    assert truth["particle_id"].duplicated().any()  # ids restart in each tomogram
    config = DiscoverConfig(k=3, batch_rows=256, tsne_sample=100, k_candidates=(3,),
                            align_members=0)
    summary = discover(tmp_path, config, truth=truth)
    assert summary["ari"] > 0.99 and summary["per_tomogram"] == {"t0": 150, "t1": 150}
    assert not (tmp_path / "discovery" / "cluster_averages_aligned.npy").exists()
    assert not any("alignment_score" in e for e in summary["clusters"])
    clusters = pd.read_parquet(tmp_path / "discovery" / "clusters.parquet")
    assert clusters.merge(truth, on=["tomogram", "particle_id"]).eval(
        "true_class == class_name_y").all()
    assert (tmp_path / "discovery" / "tsne.png").is_file()
    with pytest.raises(ValueError, match="needs a 'tomogram' column"):
        discover(tmp_path, config, truth=truth.drop(columns="tomogram"))


@pytest.mark.parametrize("epochs", [0, 2])
def test_centres_from_a_sample_then_refined_over_all(tmp_path, epochs):
    truth = fake_job(tmp_path, n_per=60, k=12)
    summary = discover(tmp_path, DiscoverConfig(k=12, batch_rows=256, fit_sample=300,
                                                epochs=epochs, minibatch=64, tsne_sample=60,
                                                k_candidates=(12,)), truth=truth)
    assert summary["ari"] > 0.99 and summary["particles"] == len(truth)


def test_incremental_pca_path(tmp_path):
    truth = fake_job(tmp_path, n_per=80)
    summary = discover(tmp_path, DiscoverConfig(k=3, batch_rows=256, pca_components=16,
                                                tsne_sample=60, k_candidates=(3,),
                                                align_min_size=81), truth=truth)
    assert summary["ari"] > 0.99
    # clusters of 80, below the size aligned: their plain means stand in
    np.testing.assert_array_equal(np.load(tmp_path / "discovery" / "cluster_averages_aligned.npy"),
                                  np.load(tmp_path / "discovery" / "cluster_averages.npy"))


def test_agreement_from_contingency_matches_scikit_learn():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.metrics.cluster import contingency_matrix

    from dsmscale.metrics import agreement

    rng = np.random.default_rng(1)
    true = rng.integers(0, 5, 400)
    pred = np.where(rng.random(400) < 0.7, true, rng.integers(0, 7, 400))
    got = agreement(contingency_matrix(pred, true))
    assert got["ari"] == pytest.approx(adjusted_rand_score(true, pred), abs=1e-9)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(true, pred), abs=1e-9)


def test_a_job_of_the_layout_before_box_index_is_refused_and_kept(tmp_path):
    fake_job(tmp_path)
    for part in (tmp_path / "particles.parquet").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.rename_columns(
            ["row" if c == "box_index" else c for c in table.column_names]), part)
    (tmp_path / "discovery").mkdir()
    (tmp_path / "discovery" / "summary.json").write_text("{}")
    with pytest.raises(InputError, match="older dsmscale .* no box_index"):
        discover(tmp_path, DiscoverConfig(k=3))
    assert (tmp_path / "discovery" / "summary.json").is_file()  # its last discovery is kept
