"""Training on Ray Train: two CPU workers (DDP over gloo) on the local Ray run the same loop as
one process, and the run matches a single-process run of the same seed within tolerance."""

import json
from pathlib import Path

import pytest

from dsmscale.training import TrainConfig, train


def _config(dataset, out: Path, workers: int) -> TrainConfig:
    return TrainConfig(dataset=str(dataset), output=str(out), batch_size=8, micro_batch=4,
                       max_epochs=3, limit_val=8, threads=1, workers=workers, seed=3)


def test_two_workers_match_one_process(tiny_dataset, tmp_path, ray_session):
    one = train(_config(tiny_dataset, tmp_path / "one", 1), progress=False)
    two = train(_config(tiny_dataset, tmp_path / "two", 2), progress=False)
    losses_one = [e["train_total"] for e in one["history"]]
    losses_two = [e["train_total"] for e in two["history"]]
    assert len(losses_two) == 3 and losses_two[-1] < losses_two[0]  # it learns
    for a, b in zip(losses_one, losses_two, strict=True):  # BN sees other micro-batches
        assert b == pytest.approx(a, rel=0.2)
    saved = json.loads((tmp_path / "two" / "history.json").read_text())
    assert [e["epoch"] for e in saved] == [1, 2, 3]
    assert (tmp_path / "two" / "best.pt").is_file()
    assert list((tmp_path / "two" / "ray_train").glob("checkpoint_*"))  # Ray Train kept them


def test_a_frozen_encoder_is_refused_across_workers(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="freeze_encoder_epochs works in one process only"):
        TrainConfig(dataset=str(tiny_dataset), output=str(tmp_path), workers=2,
                    freeze_encoder_epochs=1, init="default")
