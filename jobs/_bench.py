"""Small helpers shared by the benchmark scripts (timing, RSS, JSON output)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager


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


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def emit(figures: dict) -> None:
    """Print the figures as the last stdout line, one JSON object."""
    figures = {"commit": git_commit(), "cpus": os.cpu_count(), **figures}
    sys.stdout.flush()
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))
