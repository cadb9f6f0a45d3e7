"""deploy/ files parse, and every entry point and config file they name exists."""

from pathlib import Path

import pytest
import yaml

from dsmscale.infer.config import RunConfig

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
REPO = DEPLOY.parent


@pytest.mark.parametrize("name", ["cluster-aws.yaml", "cluster-gcp.yaml"])
def test_cluster_launcher(name):
    doc = yaml.safe_load((DEPLOY / name).read_text())
    gpu = doc["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] == 1
    assert "GPU" not in doc["available_node_types"][doc["head_node_type"]]["resources"]
    assert any("--dashboard-host=127.0.0.1" in c for c in doc["head_start_ray_commands"])


def _gpu_group(spec):
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")


def test_kuberay_cluster_and_job():
    cluster = yaml.safe_load((DEPLOY / "kuberay-raycluster.yaml").read_text())
    assert cluster["kind"] == "RayCluster" and cluster["spec"]["enableInTreeAutoscaling"]
    group = _gpu_group(cluster["spec"])
    assert group["minReplicas"] == 0
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    job = yaml.safe_load((DEPLOY / "kuberay-rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and _gpu_group(job["spec"]["rayClusterSpec"])["minReplicas"] == 0
    _check_entrypoint(job["spec"]["entrypoint"])


def _check_entrypoint(command: str):
    words = command.split()
    assert words[0] == "python" and (REPO / words[1]).is_file(), command
    config = words[words.index("--config") + 1]
    assert (REPO / config).is_file(), config
    RunConfig.from_yaml(REPO / config)  # the example job is a valid config


def test_dockerfile_runtime_env_and_readme():
    docker = (DEPLOY / "Dockerfile").read_text()
    assert docker.startswith("# ") and "FROM rayproject/ray:" in docker and "-gpu" in docker
    for line in docker.splitlines():
        if line.startswith("COPY"):
            assert (REPO / line.split()[-2]).exists(), line
    env = yaml.safe_load((DEPLOY / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "."
    readme = (DEPLOY / "README.md").read_text()
    for needed in ("ray job submit", "GPU sizing", "jobs/process_dataset.py", "Costs"):
        assert needed in readme
    _check_entrypoint("python jobs/process_dataset.py --config deploy/job.yaml")
