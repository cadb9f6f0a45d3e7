import numpy as np
from blobs import blob_tomogram, random_separated_centres

from dsmscale.conversion import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.io.mrc import write_volume
from dsmscale.metrics import match_points
from dsmscale.picking import PickConfig, non_maximum_suppression, pick_particles

NOISE_STD = 0.35  # per-voxel Gaussian noise vs blob peak 1.0 (sigma 3 px): peak SNR ~ 2.9


def test_dog_picker_recovers_dark_blobs(tmp_path):
    rng = np.random.default_rng(11)
    shape = (100, 200, 230)
    truth = random_separated_centres(shape, 120, min_distance=15, margin=3, rng=rng)
    vol = blob_tomogram(shape, truth, sigma_px=3.0, amplitude=-1.0, noise_std=NOISE_STD, seed=5)
    mrc = write_volume(tmp_path / "t.mrc", vol, voxel_size_a=10.0)
    store = convert_mrc_to_ome_zarr(mrc, tmp_path / "t.zarr", ConvertConfig(chunk=64),
                                    progress=False)
    picks = pick_particles(store, PickConfig(sigma_nm=2.5, min_distance_nm=8.0, threshold=4.0))
    scores = match_points(picks.df[["z", "y", "x"]].to_numpy(), truth, radius=3.0)
    assert scores["precision"] >= 0.95 and scores["recall"] >= 0.95, scores
    assert picks.df["score"].min() >= 4.0
    top = pick_particles(store, PickConfig(sigma_nm=2.5, min_distance_nm=8.0, top_k=10))
    assert len(top) == 10 and top.df["score"].is_monotonic_decreasing


def test_nms_keeps_best_and_spacing():
    pts = np.array([[0, 0, 0], [0, 0, 3], [0, 0, 10], [0, 0, 12]], dtype=float)
    keep = non_maximum_suppression(pts, np.array([1.0, 2.0, 0.5, 0.7]), min_distance=5)
    assert sorted(keep.tolist()) == [1, 3]


def test_match_points_counts_one_to_one():
    truth = np.array([[0, 0, 0], [10, 10, 10]], dtype=float)
    pred = np.array([[0, 0, 1], [0, 1, 0], [30, 30, 30]], dtype=float)
    s = match_points(pred, truth, radius=2)
    assert s["true_positives"] == 1 and s["precision"] == 1 / 3 and s["recall"] == 0.5
