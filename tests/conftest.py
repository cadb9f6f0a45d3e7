"""Shared fixtures: small synthetic tomograms on disk and one local Ray cluster per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from blobs import blob_tomogram, random_separated_centres

from dsmscale.conversion import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.io.mrc import write_volume

REPO = Path(__file__).resolve().parents[1]
STRUCTURES = REPO.parent / "shared" / "structures"
#: Fixtures that make a test slow (a simulation, a training run) or put it on Ray.
SLOW_FIXTURES = {"tiny_dataset", "tiny_checkpoint"}
RAY_FIXTURES = {"ray_session", "head_node"}


def pytest_collection_modifyitems(items):
    """Mark the tests that use a slow or a Ray fixture (tests that start Ray themselves are
    marked where they are written)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if used & RAY_FIXTURES:
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray cluster (2 CPUs, no GPU, no dashboard) shared by the whole test session."""
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def blob_store(tmp_path_factory) -> dict:
    """A 96×130×150 tomogram (chunks 32³) with bright blobs at known centres, as MRC and Zarr."""
    root = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(7)
    shape = (96, 130, 150)
    centres = random_separated_centres(shape, 40, min_distance=14, margin=10, rng=rng)
    volume = blob_tomogram(shape, centres, sigma_px=2.5, amplitude=1.0, noise_std=0.05, seed=3)
    mrc = write_volume(root / "blobs.mrc", volume, voxel_size_a=8.0)
    store = convert_mrc_to_ome_zarr(mrc, root / "blobs.zarr", ConvertConfig(chunk=32), progress=False)
    return {"mrc": mrc, "store": store, "volume": volume, "centres": centres, "voxel_size_a": 8.0}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small simulated dataset A (6 classes, ~90 subtomograms) for training tests."""
    from dsmscale.simulation.dataset import SimulateConfig, build_datasets
    from dsmscale.simulation.tomogram import TomogramConfig

    out = tmp_path_factory.mktemp("tinyset") / "sim"
    tomo = TomogramConfig(shape_zyx=(80, 128, 128), copies_per_class=20, tilt_step_deg=4.0,
                          classes=("1BXN", "3J9I", "4V1W", "1S3X", "2GHO", "4V94"))
    build_datasets(SimulateConfig(tomogram=tomo, datasets={"A": 0.06}, seed=5, figures=False,
                                  write_tomograms=False), out, progress=False)
    return out / "datasets" / "A"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dataset, tmp_path_factory) -> Path:
    """A DSM-Net checkpoint trained for one short epoch on the tiny dataset."""
    from dsmscale.training import TrainConfig, train

    out = tmp_path_factory.mktemp("tinyrun")
    train(TrainConfig(dataset=str(tiny_dataset), output=str(out), limit_train=16, limit_val=8,
                      batch_size=8, max_epochs=1, threads=2), progress=False)
    return out / "best.pt"
