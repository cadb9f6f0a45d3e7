"""Training runs cached by identity: a run's folder is ``WORKDIR/runs/RUN_HASH``
(`TrainConfig.run_hash`), so the same run is trained once, resumed where it stopped and shared by
every script that asks for it (the paper reproduction, the discovery experiment); a run folder
can be held by one process at a time, so several processes started with the same command share
out the runs."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dsmscale.training.config import TrainConfig
from dsmscale.training.loop import epochs_since_best, train


def in_workdir(config: TrainConfig, workdir: str | os.PathLike) -> TrainConfig:
    """``config`` with its output in ``WORKDIR/runs/RUN_HASH`` (the output is not part of the
    hash)."""
    return config.model_copy(update={"output": str(Path(workdir) / "runs" / config.run_hash())})


def history(config: TrainConfig) -> list[dict]:
    """The epochs the run has trained so far (its ``history.json``; none before the first)."""
    path = Path(config.output) / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def is_trained(config: TrainConfig) -> bool:
    """Whether the run has ended: all its epochs trained, or stopped early."""
    epochs = history(config)
    return bool(epochs) and (len(epochs) >= config.max_epochs or
                             epochs_since_best(epochs, config.monitor) >= config.patience)


def trained_checkpoint(config: TrainConfig, progress: bool = False) -> Path:
    """The run's ``best.pt``, training (or resuming) it first unless it has ended."""
    if not is_trained(config):
        train(config, progress)
    return Path(config.output) / "best.pt"


@contextmanager
def exclusive_run(output: str | os.PathLike) -> Iterator[bool]:
    """Hold the run folder for this process (an exclusive, non-blocking flock, released when the
    process ends however it ends); yields False if another process holds it."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
