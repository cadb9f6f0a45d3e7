"""Two simulated nodes (ray.cluster_utils.Cluster): work spreads and the output is complete.

Runs in a subprocess so the test session's own local Ray is left alone.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from dsmscale.io.particles import make_particles, write_csv

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = r"""
import json, sys, ray
from ray.cluster_utils import Cluster
from dsmscale.pipeline import RunConfig
from dsmscale.pipeline import run_job

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
config = RunConfig.model_validate(json.loads(sys.argv[1]))
summary = run_job(config)
print("SUMMARY " + json.dumps(summary))
ray.shutdown()
cluster.shutdown()
"""


def test_work_spreads_over_two_nodes(tmp_path, blob_store, tiny_checkpoint):
    table = make_particles(blob_store["centres"], "blobs", blob_store["voxel_size_a"])
    config = {"tomograms": [str(blob_store["store"])],
              "particles": [str(write_csv(table, tmp_path / "blobs.csv"))],
              "output": str(tmp_path / "job"), "model": str(tiny_checkpoint),
              "num_actors": 2, "cpus_per_actor": 1, "cpus_per_extract_task": 0.5,
              "threads_per_actor": 1, "max_particles_per_unit": 4, "write_maps": False,
              "batch_size": 4}  # fixed: a tuning actor starts later and the other takes all
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(config)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["particles_processed"] == len(table)
    assert len(summary["particles_per_node"]) >= 2, summary["particles_per_node"]
    from dsmscale.io.job import JobFolder

    ids = JobFolder(tmp_path / "job").read_particles()["particle_id"]
    assert sorted(ids) == list(np.arange(len(table)))
