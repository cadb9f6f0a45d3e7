"""deploy/ files parse and agree with each other, and every entry point and config they name
exists (what a cluster does with them can only be seen on a cluster)."""

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from dsmscale.pipeline import RunConfig
from dsmscale.simulation.dataset import SIMULATION_LIBRARIES

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
REPO = DEPLOY.parent
LAUNCHERS = ["cluster-aws.yaml", "cluster-gcp.yaml"]
SHARED = "/mnt/shared"


def _yaml(name):
    return yaml.safe_load((DEPLOY / name).read_text())


def _job() -> RunConfig:
    return RunConfig.from_yaml(DEPLOY / "job.yaml")


@pytest.mark.parametrize("name", LAUNCHERS)
def test_cluster_launcher(name):
    doc = _yaml(name)
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(doc, schema)
    gpu = doc["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] == 1
    assert gpu["max_workers"] == doc["max_workers"] == _job().num_actors[1]
    job = _job()
    assert job.cpus_per_actor + job.cpus_per_extract_task <= gpu["resources"]["CPU"]
    head = doc["available_node_types"][doc["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head schedules no tasks or actors
    start = " ".join(doc["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "--num-cpus=0" in start
    assert f"-v {SHARED}:{SHARED}" in doc["docker"]["run_options"]
    assert any(SHARED in c and "mount" in c for c in doc["initialization_commands"])


def _gpu_group(spec):
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")


def test_kuberay_cluster_and_job_are_one_cluster():
    cluster = _yaml("kuberay-raycluster.yaml")
    assert cluster["kind"] == "RayCluster" and cluster["spec"]["enableInTreeAutoscaling"]
    group = _gpu_group(cluster["spec"])
    assert group["minReplicas"] == 0 and group["maxReplicas"] == _job().num_actors[1]
    worker = group["template"]["spec"]["containers"][0]["resources"]
    assert worker["limits"]["nvidia.com/gpu"] == 1 and worker["requests"] == worker["limits"]
    cpus = int(worker["requests"]["cpu"])  # fits a 4-vCPU, 16 GB node after system reserves
    assert cpus <= 3 and int(worker["requests"]["memory"].removesuffix("Gi")) <= 13
    assert _job().cpus_per_actor + _job().cpus_per_extract_task <= cpus
    job = _yaml("kuberay-rayjob.yaml")
    assert job["kind"] == "RayJob" and job["spec"]["shutdownAfterJobFinishes"]
    _check_entrypoint(job["spec"]["entrypoint"])
    # one cluster, but for how its dashboard is reached (tests/reliability/test_security.py)
    spec = copy.deepcopy(job["spec"]["rayClusterSpec"])
    spec.pop("authOptions")
    spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] = "127.0.0.1"
    assert spec == cluster["spec"]
    for template in (cluster["spec"]["headGroupSpec"]["template"], group["template"]):
        claims = [v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]]
        mounts = [m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]]
        assert claims == ["dsmscale-shared"] and mounts == [SHARED]


def test_one_image_and_ray_version_everywhere():
    docker = (DEPLOY / "Dockerfile").read_text()
    ray_version = re.search(r"FROM rayproject/ray:([\d.]+)-py311-gpu", docker).group(1)
    images = set()
    for name in LAUNCHERS:
        images.add(_yaml(name)["docker"]["image"])
    cluster = _yaml("kuberay-raycluster.yaml")["spec"]
    for spec in (cluster, _yaml("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]):
        assert spec["rayVersion"] == ray_version
        for template in (spec["headGroupSpec"]["template"], _gpu_group(spec)["template"]):
            images.add(template["spec"]["containers"][0]["image"])
    assert len(images) == 1 and images.pop().endswith(f":{_package_version()}-ray{ray_version}")


def _package_version() -> str:
    return re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def _check_entrypoint(command: str):
    words = command.split()
    assert words[0] == "python" and (REPO / words[1]).is_file(), command
    config = words[words.index("--config") + 1]
    assert (REPO / config).is_file(), config
    RunConfig.from_yaml(REPO / config)  # the example job is a valid config


def test_dockerfile_runtime_env_job_and_readme():
    docker = (DEPLOY / "Dockerfile").read_text()
    assert docker.startswith("# ") and 'pip install --no-cache-dir "torch==${TORCH_VERSION}"' in docker
    for line in docker.splitlines():
        if line.startswith("COPY"):
            for source in line.split()[2:-1]:  # COPY --chown=... SOURCES... DEST
                assert (REPO / source).exists(), line
    env = _yaml("runtime_env.yaml")
    assert env["working_dir"] == "."
    job = _job()
    assert all(p.startswith(SHARED) for p in [*job.tomograms, *job.particles, job.output])
    readme = (DEPLOY / "README.md").read_text()
    for needed in ("ray job submit", "GPU sizing", "jobs/process_dataset.py", "Costs",
                   "kubectl port-forward", "dsmscale-shared"):
        assert needed in readme
    _check_entrypoint("python jobs/process_dataset.py --config deploy/job.yaml")


def test_constraints_pin_every_library_the_simulation_depends_on():
    """`make install` and the image pin the libraries whose versions change what one seed
    simulates, so the same seed gives the same data wherever dsmscale is installed that way."""
    pins = dict(line.split(";")[0].split("==")
                for line in (DEPLOY / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert set(SIMULATION_LIBRARIES) - {"dsmscale"} <= set(pins)
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in pins.values()), pins
    makefile = (REPO / "Makefile").read_text()
    assert '-e ".[test]" -c deploy/constraints.txt' in makefile
    assert "-e . -c deploy/constraints.txt" in (DEPLOY / "Dockerfile").read_text()
