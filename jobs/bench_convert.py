"""Benchmark: MRC → OME-Zarr conversion against a raw read and a raw copy of the same file.

Usage: python jobs/bench_convert.py [--shape 300 600 600] [--workdir DIR]

Every variant ends with os.sync(), so all of them pay for getting bytes to disk. The raw copy
reads and writes the bytes through user space (as a converter must); the kernel's
copy_file_range copy is reported beside it as ``kernel_copy_mb_s``. Also sweeps codec
and chunk size (the evidence behind ConvertConfig's defaults). Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dsmscale.conversion import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.io.mrc import write_volume
from dsmscale.profiling import emit, timer

SWEEP = [("lz4", 5, 64), ("lz4", 1, 64), ("lz4", 5, 128), ("lz4", 5, 256), ("zstd", 1, 64), ("zstd", 3, 64),
         ("none", 0, 64)]


def _median_time(run, repeats: int) -> float:
    """Median wall time of ``run()`` (each run starts from a clean slate and ends with sync)."""
    times = []
    for _ in range(repeats):
        t: dict[str, float] = {}
        with timer(t, "run"):
            run()
            os.sync()
        times.append(t["run"])
    return float(np.median(times))


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 600, 600])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_convert_", dir=args.workdir))
    try:
        rng = np.random.default_rng(0)
        volume = rng.normal(size=args.shape).astype(np.float32)  # noisy float32 tomogram
        mrc = write_volume(work / "tomo.mrc", volume, voxel_size_a=10.0)
        del volume
        mb = mrc.stat().st_size / 1e6
        t: dict[str, float] = {}

        def read():
            with open(mrc, "rb") as fh:
                while fh.read(64 << 20):
                    pass

        def copy():  # the bytes through user space, as any converter must move them
            (work / "copy.mrc").unlink(missing_ok=True)
            with open(mrc, "rb") as src, open(work / "copy.mrc", "wb") as dst:
                while block := src.read(64 << 20):
                    dst.write(block)

        def kernel_copy():  # copy_file_range/sendfile: never enters user space
            (work / "copy.mrc").unlink(missing_ok=True)
            shutil.copyfile(mrc, work / "copy.mrc")

        def convert(cfg: ConvertConfig):
            shutil.rmtree(work / "t.zarr", ignore_errors=True)
            os.sync()
            convert_mrc_to_ome_zarr(mrc, work / "t.zarr", cfg, progress=False)

        t["read"] = _median_time(read, args.repeats)
        t["copy"] = _median_time(copy, args.repeats)
        t["kernel_copy"] = _median_time(kernel_copy, args.repeats)
        t["default"] = _median_time(lambda: convert(ConvertConfig()), args.repeats)
        sweep = {}
        for codec, clevel, chunk in SWEEP:
            cfg = ConvertConfig(codec=codec, clevel=clevel, chunk=chunk)
            key = f"{codec}{clevel}_c{chunk}"
            t[key] = _median_time(lambda cfg=cfg: convert(cfg), args.repeats)
            sweep[key] = {"mb_s": mb / t[key],
                          "ratio": mrc.stat().st_size / _dir_bytes(work / "t.zarr" / "0")}
            print(f"{key:>12}: {sweep[key]['mb_s']:7.1f} MB/s  compression {sweep[key]['ratio']:.3f}x")
        default = ConvertConfig()
        figures = {
            "shape_zyx": args.shape, "input_mb": mb,
            "default_config": f"{default.codec}{default.clevel}_c{default.chunk}_l{default.levels}",
            "convert_mb_s": mb / t["default"], "raw_read_mb_s": mb / t["read"],
            "raw_copy_mb_s": mb / t["copy"], "kernel_copy_mb_s": mb / t["kernel_copy"],
            "ratio_to_copy": t["copy"] / t["default"],
            "sweep": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in sweep.items()},
        }
        print(f"convert {figures['convert_mb_s']:.0f} MB/s, raw read {figures['raw_read_mb_s']:.0f} "
              f"MB/s, raw copy {figures['raw_copy_mb_s']:.0f} MB/s, "
              f"ratio to copy {figures['ratio_to_copy']:.2f}")
        emit(figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
