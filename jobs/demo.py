"""The main job on an embedded default, end to end (``make demo``): a simulated tomogram through
the real job, scored against its truth — see `dsmscale.experiments.demo`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dsmscale.experiments.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    summary = run_demo(args.output, args.model, args.seed)
    print(json.dumps(summary, indent=2))
    out = args.output.resolve()
    print(f"report: {out / 'report.md'}\noutputs in {out}: demo.mrc, demo.star, job/, "
          "tomogram_slices.png, summary.json")


if __name__ == "__main__":
    main()
