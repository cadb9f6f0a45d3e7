"""Benchmark: chunk-grouped extraction against naive per-particle reads and the read+slice bound.

Usage: python jobs/bench_extract.py [--particles 20000] [--rss-particles 1000000]

Variants, all on one OME-Zarr store (default chunks, lz4) in one run:
- extractor: `extract_subtomograms` (chunk rows decoded once, boxes cut in numpy);
- naive slicing: one zarr read per particle (capped, extrapolated as a rate);
- naive Dask gather: one Dask slice computed per particle (capped);
- bound: read every chunk of the store once, then numpy slicing from memory.
Then the peak RSS of fresh processes streaming 10^4, 10^5 and 10^6 particles.
Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import dask.array as da
import numpy as np

from dsmscale.conversion import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.extraction import extract_subtomograms
from dsmscale.geometry import box_starts
from dsmscale.io.mrc import write_volume
from dsmscale.io.omezarr import open_tomogram
from dsmscale.io.particles import make_particles
from dsmscale.profiling import emit, peak_rss_gb, timer

BOX = 40


def _table(shape, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return make_particles(rng.uniform(0, np.asarray(shape) - 1, size=(n, 3)), "bench", 10.0)


def _extractor(store, table) -> float:
    t: dict[str, float] = {}
    with timer(t, "run"):
        n = sum(len(b) for b in extract_subtomograms(store, table, box=BOX, batch_size=64))
    assert n == len(table)
    return n / t["run"]


def _naive_slicing(tomo, starts) -> float:
    arr, t = tomo.array, {}
    with timer(t, "run"):
        for z, y, x in starts:
            arr[max(z, 0):z + BOX, max(y, 0):y + BOX, max(x, 0):x + BOX]
    return len(starts) / t["run"]


def _naive_dask(tomo, starts) -> float:
    lazy, t = da.from_zarr(tomo.array), {}
    with timer(t, "run"):
        for z, y, x in starts:
            lazy[z:z + BOX, y:y + BOX, x:x + BOX].compute(scheduler="synchronous")
    return len(starts) / t["run"]


def _bound(tomo, starts) -> float:
    t: dict[str, float] = {}
    with timer(t, "run"):
        volume = tomo.array[:]
        out = np.empty((64, BOX, BOX, BOX), np.float32)
        for i, (z, y, x) in enumerate(starts):
            out[i % 64] = volume[z:z + BOX, y:y + BOX, x:x + BOX]
    return len(starts) / t["run"]


def _rss_child(store: str, n: int) -> None:
    """Run in a fresh process: stream ``n`` particles and print peak RSS (GB) and rate."""
    tomo = open_tomogram(store)
    table = _table(tomo.shape, n, seed=1)
    rate = _extractor(tomo, table)
    print(json.dumps({"n": n, "peak_rss_gb": peak_rss_gb(), "per_s": rate}))


def _rss_run(store: Path, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(store), str(n)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 512, 512])
    parser.add_argument("--particles", type=int, default=20_000)
    parser.add_argument("--naive-cap", type=int, default=1000)
    parser.add_argument("--dask-cap", type=int, default=200)
    parser.add_argument("--rss-particles", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        return _rss_child(args.rss_child[0], int(args.rss_child[1]))
    work = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    try:
        volume = np.random.default_rng(0).normal(size=args.shape).astype(np.float32)
        mrc = write_volume(work / "t.mrc", volume, 10.0)
        del volume
        store = convert_mrc_to_ome_zarr(mrc, work / "t.zarr", ConvertConfig(levels=1),
                                        progress=False)
        tomo = open_tomogram(store)
        table = _table(tomo.shape, args.particles, seed=0)
        inside = box_starts(table.df[["z", "y", "x"]].to_numpy(), BOX)
        inside = inside[np.all((inside >= 0) & (inside + BOX <= tomo.shape), axis=1)]
        rates = {
            "extract_per_s": max(_extractor(tomo, table) for _ in range(3)),
            "naive_slicing_per_s": _naive_slicing(tomo, inside[:args.naive_cap]),
            "naive_dask_per_s": _naive_dask(tomo, inside[:args.dask_cap]),
            "bound_per_s": max(_bound(tomo, inside) for _ in range(3)),
        }
        for key, value in rates.items():
            print(f"{key:>22}: {value:9.0f} boxes/s")
        rss = [_rss_run(store, n) for n in args.rss_particles]
        for r in rss:
            print(f"streamed {r['n']:>9} particles: peak RSS {r['peak_rss_gb']:.2f} GB, "
                  f"{r['per_s']:.0f} boxes/s")
        emit({
            "shape_zyx": args.shape, "chunks": list(tomo.chunks), "particles": args.particles,
            **rates,
            "ratio_to_bound": rates["extract_per_s"] / rates["bound_per_s"],
            "speedup_vs_naive": rates["extract_per_s"] / rates["naive_slicing_per_s"],
            "speedup_vs_naive_dask": rates["extract_per_s"] / rates["naive_dask_per_s"],
            "peak_rss_gb_by_n": {str(r["n"]): round(r["peak_rss_gb"], 3) for r in rss},
            "peak_rss_gb_1e6": max(r["peak_rss_gb"] for r in rss),
        })
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
