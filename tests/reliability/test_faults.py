"""Faults during a job: every particle ends up exactly once (checked by id).

Faults are real (a killed actor, a SIGKILLed driver) or injected through `dsmscale.failpoints`
(an I/O error in one extraction task, a full disk) in a job run as its own process, so the
armed failpoint reaches every Ray worker that job starts.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from dsmscale.io.job import JobFolder
from dsmscale.io.particles import make_particles, write_csv
from dsmscale.pipeline import RunConfig, run_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _job(tmp_path, blob_store, checkpoint, **kw) -> tuple[dict, object]:
    table = make_particles(blob_store["centres"], "blobs", blob_store["voxel_size_a"],
                           ids=np.arange(500, 500 + len(blob_store["centres"])))
    config = {"tomograms": [str(blob_store["store"])],
              "particles": [str(write_csv(table, tmp_path / "blobs.csv"))],
              "output": str(tmp_path / "job"), "model": str(checkpoint), "threads_per_actor": 1,
              "max_particles_per_unit": 4, "batch_size": 4, "write_maps": False, **kw}
    return config, table


def _parts(out: Path) -> int:
    return len(list((out / "particles.parquet").glob("*.parquet")))


def _exactly_once(out: Path, table) -> None:
    ids = JobFolder(out).read_particles()["particle_id"]
    assert ids.is_unique, "a particle was written twice"
    assert sorted(ids) == sorted(table.df["particle_id"]), "particles were lost"


def test_actor_killed_mid_job(tmp_path, blob_store, tiny_checkpoint, ray_session):
    config, table = _job(tmp_path, blob_store, tiny_checkpoint, max_actor_restarts=3)
    out = Path(config["output"])
    killed = []

    def kill_an_actor():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if _parts(out) >= 2:
                for proc in psutil.process_iter(["cmdline"]):
                    if "InferenceActor" in " ".join(proc.info["cmdline"] or []):
                        proc.kill()
                        killed.append(proc.pid)
                        break
            time.sleep(0.05)

    thread = threading.Thread(target=kill_an_actor, daemon=True)
    thread.start()
    summary = run_job(RunConfig(**config))
    thread.join(timeout=5)
    assert killed, "the actor was never killed: the test proved nothing"
    assert summary["particles_processed"] == len(table)
    _exactly_once(out, table)


def _driver(tmp_path, config: dict) -> list[str]:
    """The command that runs this job as a Ray Job entry point would (own process, own Ray)."""
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    return [sys.executable, str(REPO / "jobs" / "process_dataset.py"), "--config",
            str(tmp_path / "job.yaml")]


def _armed(**points: str) -> dict:
    return os.environ | {"DSMSCALE_FAILPOINTS": ",".join(f"{k}={v}" for k, v in points.items())}


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_extraction_task_failing_once_is_retried(tmp_path, blob_store, tiny_checkpoint):
    config, table = _job(tmp_path, blob_store, tiny_checkpoint)
    token = tmp_path / "extract.token"
    token.touch()
    result = subprocess.run(_driver(tmp_path, config), capture_output=True, text=True,
                            timeout=600, env=_armed(extract=f"once:{token}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not token.exists(), "the injected read error never fired: the test proved nothing"
    assert _summary(Path(config["output"]))["particles_processed"] == len(table)
    _exactly_once(Path(config["output"]), table)


def test_disk_full_fails_cleanly_then_resumes(tmp_path, blob_store, tiny_checkpoint):
    config, table = _job(tmp_path, blob_store, tiny_checkpoint, max_particles_per_unit=2)
    out, disk_full = Path(config["output"]), tmp_path / "disk-full.token"
    driver = subprocess.Popen(_driver(tmp_path, config), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_armed(write=f"while:{disk_full}"))
    deadline = time.time() + 300
    while _parts(out) < 2 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.02)
    disk_full.touch()  # the disk fills up mid-job
    _, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 1, stderr[-3000:]
    message = [ln for ln in stderr.splitlines() if ln.startswith("dsmscale run: error")]
    assert len(message) == 1 and "No space left on device" in message[0], stderr[-3000:]
    assert not (out / "summary.json").exists(), "a failed job was marked complete"
    done_before = _parts(out)
    assert 2 <= done_before < len(table) // 2
    disk_full.unlink()  # space freed
    rerun = subprocess.run(_driver(tmp_path, config), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _summary(out)["units_skipped"] == done_before
    _exactly_once(out, table)


def test_driver_killed_and_rerun(tmp_path, blob_store, tiny_checkpoint):
    config, table = _job(tmp_path, blob_store, tiny_checkpoint)
    out = Path(config["output"])
    command = _driver(tmp_path, config)
    before = {p.pid for p in psutil.process_iter()}
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 300
    while _parts(out) < 2 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.05)
    assert driver.poll() is None, "the job finished before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before
                 and "ray" in " ".join(p.info["cmdline"] or [])]
    for proc in leftovers:  # the embedded cluster the killed driver left behind
        proc.kill()
    psutil.wait_procs(leftovers, timeout=30)
    done_before = _parts(out)
    assert 0 < done_before
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _summary(out)["units_skipped"] >= done_before
    _exactly_once(out, table)
