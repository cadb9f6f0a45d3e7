"""The load run of `jobs/bench_reliability.py`, small: four tomogram stores, every particle
exactly once, memory and throughput sampled (the 10⁶-particle form is run by hand)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_load_run_over_four_stores_loses_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "bench_reliability.py"), "--particles", "2000",
         "--stores", "4", "--skip-cases", "--interval", "0.5", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["particles"] == 2000 and figures["stores"] == 4
    assert figures["particles_lost"] == 0 and figures["particles_duplicated"] == 0
    assert figures["end_to_end_per_s"] > 0 and 0.2 < figures["peak_rss_gb"] < 20
    assert list(tmp_path.iterdir()) == [], "the work folder was not cleaned up"
