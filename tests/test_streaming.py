"""Training data streamed from the dataset's arrays: the same boxes and targets as in memory,
every box once per epoch in a shuffled block order, and a run that learns from it."""

import numpy as np
import pytest
import torch

from dsmscale.io.dataset import dataset_classes
from dsmscale.training.data import StreamedData, TrainingData, load_training_data


@pytest.fixture()
def synthetic(tmp_path):
    """A dataset of 300 random 16³ boxes (5 chunks of 64), its train rows spread over them."""
    import pandas as pd

    from dsmscale.io.dataset import TABLE, create_dataset_arrays

    rng = np.random.default_rng(0)
    arrays = create_dataset_arrays(tmp_path / "ds", 16, 10.0)
    arrays["subtomograms"].append(rng.normal(size=(300, 16, 16, 16)).astype(np.float32))
    arrays["mask"].append((rng.random((300, 16, 16, 16)) > 0.7).astype(np.uint8))
    arrays["density"].append(rng.random((300, 16, 16, 16)).astype(np.float32))
    names = rng.choice(["a", "b", "c"], 300)
    pd.DataFrame({"index": np.arange(300), "split": rng.choice(["train", "val"], 300, p=[.8, .2]),
                  "class_name": names, "class_index": pd.Series(names).map({"a": 0, "b": 1, "c": 2}),
                  "has_targets": rng.random(300) > 0.2}).to_parquet(tmp_path / "ds" / TABLE)
    return tmp_path / "ds"


@pytest.fixture()
def both(synthetic, monkeypatch):
    monkeypatch.setattr(StreamedData, "BLOCK_BYTES", 64 * 16**3 * 9)  # one chunk a block
    classes = dataset_classes(synthetic)
    memory = load_training_data(synthetic, "train", classes, stream=False)
    streamed = load_training_data(synthetic, "train", classes, stream=True)
    assert isinstance(memory, TrainingData) and isinstance(streamed, StreamedData)
    return memory, streamed


def _concat(batches):
    xs, targets = zip(*batches, strict=True)
    return torch.cat(xs), {k: torch.cat([t[k] for t in targets]) for k in targets[0]}


def test_streamed_boxes_and_targets_are_those_in_memory(both):
    memory, streamed = both
    x, target = _concat(streamed.in_order(7))
    y, expected = _concat(memory.in_order(7))
    torch.testing.assert_close(x, y)
    for key in ("label", "mask", "density", "has_targets"):
        torch.testing.assert_close(target[key], expected[key])


def test_an_epoch_streams_every_box_once_in_a_shuffled_order(both):
    _, streamed = both
    assert len(streamed.blocks(None)) > 1
    batches = list(streamed.shuffled(np.random.default_rng(0), 8))
    assert all(len(x) == 8 for x, _ in batches[:-1])
    x, target = _concat(batches)
    ordered, expected = _concat(streamed.in_order(8))
    assert len(x) == len(streamed) and not torch.equal(x, ordered)
    sums = lambda density: np.sort(density.flatten(1).sum(1).numpy())  # noqa: E731 - per box
    np.testing.assert_allclose(sums(target["density"]), sums(expected["density"]), rtol=1e-6)
    assert sorted(target["label"].tolist()) == sorted(expected["label"].tolist())


def test_training_streams_and_learns(tiny_dataset, tmp_path):
    from dsmscale.training import TrainConfig, train

    result = train(TrainConfig(dataset=str(tiny_dataset), output=str(tmp_path / "run"),
                               stream=True, batch_size=8, max_epochs=3, limit_val=16, threads=2),
                   progress=False)
    losses = [entry["train_total"] for entry in result["history"]]
    assert losses[-1] < losses[0]
