"""Reliability, long form: the reliability suite's cases, then a load run, in one go.

Usage: python jobs/bench_reliability.py [--particles 1000000] [--stores 4] [--box 16]
                                        [--workdir DIR] [--skip-cases] [--keep]

1. Cases: `pytest tests/reliability` (bad inputs, injected and real faults, security), counted
   from its JUnit report.
2. Load: `--stores` synthetic tomograms (MRC → OME-Zarr through `convert_mrc_to_ome_zarr`) with
   `--particles` random particles spread over them, run with `run_job` on the embedded Ray as a
   user would (default actor, batch and object-store settings). The model is DSM-Net's
   classification subnet (`cls`: the teacher's encoder and classifier, box-size agnostic) with
   untrained weights in the shipped checkpoint's format and classes, on `--box` ³ boxes (default
   16): this run loads the data plane (planning, extraction, Ray Data scheduling, the actor's
   sinks, memory) at 10⁶ particles in well under an hour on 2 cores, where any model on 40³
   boxes costs ≥ 1 GFLOP per particle (≥ 3 h here). The model's own speed is
   `bench_pipeline.py`'s and `bench_distill.py`'s business. Every 5 s it samples the summed
   RSS and PSS of this driver and every Ray process, and the particles finished (rows of the
   finished Parquet parts).
3. Every particle is checked exactly once by (tomogram, particle_id).

Flatness is reported per quarter of the inference stage: median RSS and throughput in each;
``rss_q4_over_q2`` and ``rate_q4_over_q2`` near 1 mean flat (the first quarter holds start-up).
Last stdout line: one JSON object (cases_total, cases_passed, particles_lost,
particles_duplicated, peak_rss_gb, peak_pss_gb, ...).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from dsmscale.checkpoints import load_checkpoint
from dsmscale.conversion import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.io.job import JobFolder
from dsmscale.io.mrc import write_volume
from dsmscale.io.particles import make_particles, write_csv
from dsmscale.models import build_model
from dsmscale.pipeline import RunConfig, run_job
from dsmscale.profiling import Sampler, TreeMemory, emit
from dsmscale.weights import resolve_model

REPO = Path(__file__).resolve().parents[1]
SHAPE = (128, 512, 512)  # z, y, x voxels per synthetic tomogram
VOXEL_A = 10.0
MARGIN = 20  # voxels from the faces: no box of up to 40³ needs padding


def run_cases(work: Path) -> dict:
    """Run the reliability suite; counts from its JUnit XML."""
    report = work / "reliability.xml"
    subprocess.run([sys.executable, "-m", "pytest", str(REPO / "tests" / "reliability"), "-q",
                    "-p", "no:cacheprovider", f"--junitxml={report}"], cwd=REPO, check=False)
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {"cases_total": counts["tests"],
            "cases_passed": counts["tests"] - counts["failures"] - counts["errors"]
            - counts["skipped"]}


def data_plane_checkpoint(path: Path, box: int) -> Path:
    """DSM-Net's classification subnet with fresh weights, in the shipped checkpoint's format
    and with its classes, for ``box``³ inputs."""
    ckpt = load_checkpoint(resolve_model("default"))
    torch.manual_seed(0)
    model = build_model("cls", ckpt["n_classes"])
    torch.save(ckpt | {"model": "cls", "heads": ["cls"], "state_dict": model.state_dict(),
                       "box": box, "batch_norm": True}, path)
    return path


def write_inputs(work: Path, particles: int, stores: int, seed: int = 0
                 ) -> tuple[list[str], list[str], dict[str, int]]:
    """``stores`` OME-Zarr tomograms and one CSV table each (ids 0..n-1); particles split
    evenly. Returns the stores, the tables and the particle count per tomogram."""
    rng = np.random.default_rng(seed)
    tomograms, tables, counts = [], [], {}
    for i, n in enumerate(np.diff(np.linspace(0, particles, stores + 1).astype(int))):
        name = f"tomo_{i:02d}"
        volume = rng.standard_normal(SHAPE, dtype=np.float32)
        mrc = write_volume(work / f"{name}.mrc", volume, VOXEL_A)
        tomograms.append(str(convert_mrc_to_ome_zarr(mrc, work / f"{name}.zarr",
                                                     ConvertConfig(), progress=False)))
        mrc.unlink()
        centres = rng.uniform(MARGIN, np.array(SHAPE) - MARGIN - 1, size=(n, 3))
        tables.append(str(write_csv(make_particles(centres, name, VOXEL_A), work / f"{name}.csv")))
        counts[name] = int(n)
    return tomograms, tables, counts


class PartCounter(Sampler):
    """Particles finished over time: rows of the Parquet parts, counted as they appear."""

    def __init__(self, parts: Path, interval_s: float):
        super().__init__(self._count, interval_s)
        self.parts, self._seen = parts, {}

    def _count(self) -> int:
        for path in self.parts.glob("*.parquet") if self.parts.is_dir() else []:
            if path.name not in self._seen:
                try:
                    self._seen[path.name] = pq.read_metadata(path).num_rows
                except OSError:
                    continue
        return sum(self._seen.values())


def quarters(memory: TreeMemory, counter: PartCounter) -> dict:
    """Median RSS (GB) and throughput (particles/s) in each quarter of the inference stage."""
    total = max((n for _, n in counter.samples), default=0)
    done = [(t, n) for t, n in counter.samples if n > 0]
    if len(done) < 8:
        return {}
    # from the first finished part to the sample that saw the last one (not the end of the
    # sampling, which also covers the job's closing tables and report)
    t0, t1 = done[0][0], next(t for t, n in done if n == total)
    edges = np.linspace(t0, t1, 5)
    rss, rate = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        inside = [rss for t, (rss, _) in memory.samples if a <= t <= b]
        rss.append(float(np.median(inside)) / 1e9 if inside else float("nan"))
        ts, ns = np.array([t for t, _ in done]), np.array([n for _, n in done])
        rate.append(float(np.interp(b, ts, ns) - np.interp(a, ts, ns)) / (b - a))
    return {"rss_gb_by_quarter": rss, "particles_per_s_by_quarter": rate,
            "rss_q4_over_q2": rss[3] / rss[1], "rate_q4_over_q2": rate[3] / rate[1]}


def exactly_once(out: Path, expected: dict[str, int]) -> dict:
    """Lost and duplicated particles, by (tomogram, particle_id)."""
    got = JobFolder(out).read_particles(columns=["tomogram", "particle_id"])
    lost = duplicated = 0
    for name, n in expected.items():
        ids = got.loc[got["tomogram"] == name, "particle_id"].to_numpy()
        duplicated += len(ids) - len(np.unique(ids))
        lost += n - int(np.isin(np.arange(n), ids).sum())
    return {"particles_lost": lost, "particles_duplicated": duplicated}


def run_load(work: Path, particles: int, stores: int, box: int, interval_s: float) -> dict:
    tomograms, tables, expected = write_inputs(work, particles, stores)
    config = RunConfig(tomograms=tomograms, particles=tables, output=str(work / "job"), box=box,
                       model=str(data_plane_checkpoint(work / "cls_untrained.pt", box)),
                       write_maps=False, discover=None)
    start = time.perf_counter()
    with TreeMemory(interval_s) as memory, PartCounter(JobFolder(config.output).parts,
                                                       interval_s) as counter:
        summary = run_job(config)
    wall = time.perf_counter() - start
    return {"particles": particles, "stores": stores, "box": box, "wall_s": wall,
            "end_to_end_per_s": summary["particles_processed"] / wall,
            "peak_rss_gb": memory.peak_rss / 1e9, "peak_pss_gb": memory.peak_pss / 1e9,
            **quarters(memory, counter), **exactly_once(work / "job", expected)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--particles", type=int, default=1_000_000)
    parser.add_argument("--stores", type=int, default=4)
    parser.add_argument("--box", type=int, default=16, help="box edge (voxels), 8 to 40")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    parser.add_argument("--interval", type=float, default=5.0, help="sampling interval (s)")
    parser.add_argument("--skip-cases", action="store_true", help="only the load run")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_reliability_", dir=args.workdir))
    try:
        figures = {} if args.skip_cases else run_cases(work)
        figures |= run_load(work, args.particles, args.stores, args.box, args.interval)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    emit(figures)


if __name__ == "__main__":
    main()
