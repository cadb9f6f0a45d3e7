"""The CLI happy path and the demo job, end to end on real files."""

import json
import subprocess
import sys
from pathlib import Path

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


def test_demo_job(tmp_path, tiny_checkpoint):
    """The demo's code path with a tiny model (make demo uses the shipped one)."""
    result = subprocess.run([sys.executable, str(REPO / "jobs" / "demo.py"), "--output",
                             str(tmp_path / "demo"), "--model", str(tiny_checkpoint)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["classified_inside"] + summary["classified_padded"] == summary["true_particles"]
    assert summary["classified_inside"] > 50 and summary["classified_padded"] > 0
    assert 0.0 <= summary["class_accuracy_inside"] <= 1.0
    # realistic data (crowding, wedge, CTF, SNR 0.06): a DoG picker finds many particles
    assert summary["pick_recall"] >= 0.4 and summary["pick_precision"] >= 0.4
    assert (tmp_path / "demo" / "report.md").is_file()
    assert (tmp_path / "demo" / "job" / "maps" / "demo_labels.zarr").is_dir()
