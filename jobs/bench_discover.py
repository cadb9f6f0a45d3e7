"""Benchmark: peak memory of the streaming reduce stage as the number of particles grows.

Usage: python jobs/bench_discover.py [--rows 10000 100000 1000000] [--k 22]

For each N, writes a synthetic job output (N rows of 1024-d float32 features in Parquet parts of
4,096 rows, k Gaussian clusters, and 8³ density boxes) and, in a fresh process, runs the whole
reduce stage (`discover`: k-means on a bounded sample, a streamed partial_fit pass, the
assignment pass with per-cluster tallies and density averages, the k report and t-SNE on a
sample), reporting peak RSS (VmHWM), time and cluster purity. Features alone are 4 GB at 10⁶
rows: the reduce stage must not hold them. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dsmscale.io.job import JobFolder
from dsmscale.io.subtomograms import create_box_array
from dsmscale.profiling import emit, peak_rss_gb

PART = 4096
BOX = 8


def write_job(root: Path, n: int, k: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(k, 1024)).astype(np.float32)
    job = JobFolder(root)
    job.parts.mkdir(parents=True)
    density = create_box_array(job.density, n, BOX, chunk_boxes=PART)
    for start in range(0, n, PART):
        m = min(PART, n - start)
        labels = rng.integers(0, k, m)
        feats = centres[labels] + rng.standard_normal((m, 1024), dtype=np.float32)
        pq.write_table(pa.table({
            "particle_id": np.arange(start, start + m), "box_index": np.arange(start, start + m),
            "tomogram": ["t"] * m, "class_name": [f"c{c}" for c in labels],
            "score": np.ones(m), "features": pa.FixedSizeListArray.from_arrays(
                pa.array(feats.ravel()), 1024)}), job.part(f"{start:09d}"))
        density[start:start + m] = np.broadcast_to(labels[:, None, None, None].astype(np.float32),
                                                   (m, BOX, BOX, BOX))


def child(root: str, k: int) -> None:
    from dsmscale.discovery import DiscoverConfig, discover

    config = DiscoverConfig(k=k, epochs=1, tsne_sample=500)
    start = time.perf_counter()
    summary = discover(Path(root), config)
    wall = time.perf_counter() - start
    # the synthetic class_name is the generating cluster: purity = share of clusters' majorities
    purity = sum(max(c["predicted"].values()) for c in summary["clusters"] if c["size"])
    print(json.dumps({"peak_rss_gb": peak_rss_gb(), "wall_s": wall,
                      "purity": purity / summary["particles"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--k", type=int, default=22)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.k)
    results = {}
    for n in args.rows:
        work = Path(tempfile.mkdtemp(prefix="bench_discover_"))
        try:
            write_job(work, n, args.k)
            run = subprocess.run([sys.executable, __file__, "--child", str(work), "--k",
                                  str(args.k)], capture_output=True, text=True, check=True)
            results[str(n)] = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{n:>9} rows: peak RSS {results[str(n)]['peak_rss_gb']:.2f} GB, "
                  f"{results[str(n)]['wall_s']:.0f} s, purity {results[str(n)]['purity']:.3f}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    emit({"k": args.k, "by_rows": results,
          "peak_rss_gb_1e6": results.get("1000000", {}).get("peak_rss_gb"),
          "feature_gb_1e6": 1e6 * 1024 * 4 / 1e9})


if __name__ == "__main__":
    main()
