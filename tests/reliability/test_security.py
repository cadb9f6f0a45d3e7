"""Security: checkpoints load without unpickling code, user data is never unpickled, and the
Ray dashboard is bound to localhost unless configured otherwise."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dsmscale.checkpoints import load_checkpoint
from dsmscale.errors import InputError

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "dsmscale").rglob("*.py"), *(REPO / "jobs").glob("*.py")])


def _calls(name: str):
    """(file, call node) for every call whose dotted name ends with ``name``."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(name):
                yield path, node


def test_every_torch_load_is_weights_only():
    calls = list(_calls("torch.load"))
    assert calls, "no torch.load found: the scan is looking in the wrong place"
    for path, call in calls:
        flags = {k.arg: k.value for k in call.keywords}
        assert isinstance(flags.get("weights_only"), ast.Constant) and \
            flags["weights_only"].value is True, f"{path.name}:{call.lineno}"


def test_nothing_unpickles_user_data():
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree)
                    if isinstance(n, ast.Import | ast.ImportFrom)
                    for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
        assert not imported & {"pickle", "cloudpickle", "dill", "joblib", "shelve"}, path.name
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            assert not ast.unparse(call.func).endswith("read_pickle"), f"{path.name}:{call.lineno}"
            for k in call.keywords:
                assert not (k.arg == "allow_pickle" and getattr(k.value, "value", False)), \
                    f"{path.name}:{call.lineno}"


class _Payload:
    """Unpickling this runs code: it would create the file named ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"format": "dsmscale-checkpoint-1", "model": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="evil.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists(), "loading the checkpoint ran its code"


def test_cluster_dashboards_are_on_localhost_or_behind_a_token():
    deploy = REPO / "deploy"
    for name in ("cluster-aws.yaml", "cluster-gcp.yaml"):
        commands = yaml.safe_load((deploy / name).read_text())["head_start_ray_commands"]
        starts = [c for c in commands if "ray start --head" in c]
        assert starts and all("--dashboard-host=127.0.0.1" in c for c in starts), name
    cluster = yaml.safe_load((deploy / "kuberay-raycluster.yaml").read_text())["spec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    # the RayJob's operator polls the job through the head service: the dashboard listens on
    # all interfaces there, and only behind Ray's token authentication
    job = yaml.safe_load((deploy / "kuberay-rayjob.yaml").read_text())["spec"]
    assert job["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    assert job["submissionMode"] == "SidecarMode"  # submits through localhost in the head pod


PROBE = """
import json, psutil
from dsmscale.parallel import ensure_ray
ensure_ray(num_cpus=1)
found = []
for proc in psutil.Process().children(recursive=True):
    cmd = proc.cmdline()
    if any(part.endswith("dashboard/dashboard.py") for part in cmd):
        listening = [c.laddr.ip for c in proc.net_connections("tcp")
                     if c.status == "LISTEN" and c.laddr.port == 8265]
        found.append({"host": [p for p in cmd if p.startswith("--host=")], "http": listening})
print(json.dumps(found))
"""


@pytest.mark.ray
def test_embedded_ray_dashboard_is_localhost_only(tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            timeout=180, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert result.returncode == 0, result.stderr[-2000:]
    dashboards = json.loads(result.stdout.strip().splitlines()[-1])
    assert dashboards, "no dashboard process found: the probe proved nothing"
    for dashboard in dashboards:
        assert dashboard["host"] == ["--host=127.0.0.1"]
        assert set(dashboard["http"]) <= {"127.0.0.1"}
