"""Measuring a run: wall time, this process's peak RSS, the summed RSS and PSS of a process
tree (a driver and its Ray workers) sampled in the background, a model's throughput, and the
benchmarks' output (`jobs/bench_*.py`: the figures as one JSON object, the last stdout line)."""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from dsmscale.report.provenance import git_commit


@contextmanager
def timer(results: dict, key: str):
    """Store the wall time of the block in ``results[key]`` (seconds)."""
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB.

    Reads VmHWM, which starts afresh at exec; getrusage's ru_maxrss would also count the memory
    a parent held when it forked this process.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def boxes_per_second(predict, batch: int, seconds: float) -> float:
    """Subtomograms/s of ``predict`` on random normalised 40³ boxes (after one warm-up batch)."""
    import numpy as np

    boxes = np.random.default_rng(0).standard_normal((batch * 4, 40, 40, 40)).astype(np.float32)
    predict(boxes[:batch])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict(boxes)
        n += len(boxes)
    return n / (time.perf_counter() - start)


class Sampler:
    """Calls ``measure()`` every ``interval_s`` in a background thread while the ``with`` block
    runs; ``samples`` holds (perf_counter time in s, value)."""

    def __init__(self, measure: Callable[[], object], interval_s: float = 1.0):
        self.measure, self.interval_s = measure, interval_s
        self.samples: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.measure()))
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def tree_memory() -> tuple[int, int]:
    """Summed RSS and PSS (bytes) of this process and all its descendants."""
    import psutil

    me = psutil.Process()
    rss = pss = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
    return rss, pss


class TreeMemory(Sampler):
    """Summed RSS and PSS of this process tree, sampled; samples are (time, (RSS, PSS))."""

    def __init__(self, interval_s: float = 1.0):
        super().__init__(tree_memory, interval_s)

    @property
    def peak_rss(self) -> int:
        return max((rss for _, (rss, _) in self.samples), default=0)

    @property
    def peak_pss(self) -> int:
        return max((pss for _, (_, pss) in self.samples), default=0)


def emit(figures: dict) -> None:
    """Print the figures, with the commit and the machine's core count, as the last stdout
    line: one JSON object."""
    figures = {"commit": git_commit(), "cpus": os.cpu_count(), **figures}
    sys.stdout.flush()
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))
