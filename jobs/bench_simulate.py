"""Benchmark: wall time and peak RSS to build datasets A and B from scratch (standard config).

Usage: python jobs/bench_simulate.py [--output DIR] [--keep]

Runs `dsmscale.simulation.build_datasets` with the default SimulateConfig (one 600×600×300
tomogram at 1 nm, the 22 standard classes, SNR 0.06 and 0.01), with an empty template cache so
the densities are built too. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from dsmscale.profiling import emit, peak_rss_gb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=None, help="keep the datasets here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_simulate_"))
    os.environ["DSMSCALE_CACHE"] = str(work / "cache")  # from scratch: templates too
    from dsmscale.simulation.dataset import SimulateConfig, build_datasets

    output = args.output or work / "sim"
    try:
        start = time.perf_counter()
        summary = build_datasets(SimulateConfig(), output, overwrite=True, progress=False)
        wall = time.perf_counter() - start
        counts = summary["per_class"]
        print("per-class counts (train/val/test):")
        for cls, row in counts.items():
            print(f"  {cls}: {row}")
        emit({
            "wall_s": wall, "peak_rss_gb": peak_rss_gb(),
            "n_subtomograms_a": summary["n_subtomograms"]["A"],
            "n_subtomograms_b": summary["n_subtomograms"]["B"],
            "snr_measured_a": summary["snr_measured"]["A"],
            "snr_measured_b": summary["snr_measured"]["B"],
            "volume_fraction": summary["volume_fraction"],
            "min_per_class": min(sum(r.values()) for r in counts.values()),
            "output": str(output) if args.output else None,
        })
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
