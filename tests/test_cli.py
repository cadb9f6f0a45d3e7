"""The CLI happy path and the demo job, end to end on real files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from dsmscale.io.subtomograms import read_subtomograms

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    result = subprocess.run([sys.executable, "-m", "dsmscale.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_convert_pick_extract(tmp_path, blob_store):
    store = tmp_path / "t.zarr"
    run("convert", blob_store["mrc"], "-o", store, "--chunk", "32", "--zarr-format", "2")
    run("pick", store, "-o", tmp_path / "picks.star", "--polarity", "bright", "--sigma-nm", "2",
        "--min-distance-nm", "8", "--threshold", "5")
    run("extract", store, tmp_path / "picks.star", "-o", tmp_path / "sub", "--box", "16")
    boxes, meta = read_subtomograms(tmp_path / "sub")
    assert boxes.shape[1:] == (16, 16, 16)
    assert abs(len(meta) - len(blob_store["centres"])) <= 2


def test_demo_job(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "jobs" / "demo.py"), "--output",
                             str(tmp_path / "demo")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    # realistic data (crowding, wedge, CTF, SNR 0.1): a DoG picker finds most particles
    assert summary["pick_recall"] >= 0.6 and summary["pick_precision"] >= 0.6
    boxes, meta = read_subtomograms(tmp_path / "demo" / "subtomograms")
    assert len(meta) == summary["subtomograms"] == summary["picked"]
    assert np.isfinite(boxes[:4]).all()
