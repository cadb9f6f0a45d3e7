"""The job as a real Ray Job: `ray start --head` on this machine, then `ray job submit`."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from dsmscale.io.job import JobFolder
from dsmscale.io.particles import make_particles, write_csv

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# every port of the new head chosen free: the test session's own Ray already holds the defaults
# (its dashboard agent sits on 52365; a second agent there starts without HTTP and jobs hang)
PORT, DASHBOARD, AGENT_HTTP = _free_port(), _free_port(), _free_port()


def _stop_cluster(temp_dir: str) -> None:
    """Kill only this cluster's processes (their command lines name its temp dir); `ray stop`
    would also stop the test session's own local Ray."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"])
             if any(temp_dir in arg for arg in (p.info["cmdline"] or []))]
    for proc in procs:
        proc.kill()
    psutil.wait_procs(procs, timeout=30)


@pytest.fixture()
def head_node():
    temp_dir = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")  # AF_UNIX paths must stay short
    # the test session's own ray.init() leaves RAY_* variables that would point the new head,
    # the CLI and the job's driver at the wrong cluster: start from an environment without them
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_AUTH_MODE="token")
    start = subprocess.run([RAY, "start", "--head", f"--port={PORT}", "--num-cpus=2",
                            "--num-gpus=0", "--include-dashboard=true",
                            "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD}",
                            f"--dashboard-agent-listen-port={AGENT_HTTP}",
                            f"--temp-dir={temp_dir}"],
                           capture_output=True, text=True, env=env, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    yield env, temp_dir
    _stop_cluster(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _ray_job(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command, *rest = args
    return subprocess.run([RAY, "job", command, f"--address=http://127.0.0.1:{DASHBOARD}", *rest],
                          capture_output=True, text=True, env=env, timeout=timeout)


def _wait_for_job(env: dict, submission_id: str, deadline_s: float) -> str:
    """Poll `ray job status` until the job ends or the deadline passes; the job's status line."""
    end = time.monotonic() + deadline_s
    status = ""
    while time.monotonic() < end:
        status = _ray_job(env, "status", submission_id).stdout
        if any(word in status.lower() for word in ("succeeded", "failed", "stopped")):
            return status
        time.sleep(3)
    return status + f"\n(no end after {deadline_s:.0f} s)"


def _cluster_log_tail(temp_dir: str, lines: int = 40) -> str:
    """The last lines of the head's job and agent logs, to say why a job did not finish."""
    logs = Path(temp_dir) / "session_latest" / "logs"
    tails = []
    for log in sorted(logs.glob("job-driver-*.log")) + sorted(logs.glob("dashboard_agent*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"== {log.name}\n" + "\n".join(text))
    return "\n".join(tails)


def test_process_dataset_as_ray_job(tmp_path, blob_store, tiny_checkpoint, head_node):
    env, temp_dir = head_node
    table = make_particles(blob_store["centres"], "blobs", blob_store["voxel_size_a"])
    config = {"tomograms": [str(blob_store["store"])],
              "particles": [str(write_csv(table, tmp_path / "blobs.csv"))],
              "output": str(tmp_path / "job"), "model": str(tiny_checkpoint),
              "threads_per_actor": 1, "write_maps": False}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    submission_id = f"dsmscale-test-{os.getpid()}"
    for _ in range(60):  # the job agent comes up some seconds after `ray start`
        submit = _ray_job(env, "submit", "--no-wait", f"--submission-id={submission_id}",
                          f"--working-dir={REPO / 'jobs'}", "--", sys.executable,
                          "process_dataset.py", "--config", str(tmp_path / "job.yaml"))
        if "No available agent" not in submit.stderr:
            break
        time.sleep(2)
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:]
    status = _wait_for_job(env, submission_id, deadline_s=420)
    if "succeeded" not in status.lower():
        logs = _ray_job(env, "logs", submission_id).stdout[-3000:]
        _ray_job(env, "stop", submission_id)
        pytest.fail(f"job did not succeed: {status}\n{logs}\n{_cluster_log_tail(temp_dir)}")
    results = JobFolder(tmp_path / "job").read_particles()
    assert sorted(results["particle_id"]) == list(np.arange(len(table)))
