"""Ship a trained run as a package model: a slim checkpoint plus its model card.

Usage: python jobs/ship_model.py RUN_DIR --name default --data data/sim/datasets

Copies RUN_DIR/best.pt without optimiser state (`dsmscale.checkpoints.slim_checkpoint`) into
dsmscale/weights/, evaluates it on the test split of every dataset under --data, and writes
dsmscale/weights/<file>.md (`dsmscale.report.model_card`) with the data, config, metrics, command
and commit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsmscale.checkpoints import load_checkpoint, save_checkpoint, slim_checkpoint
from dsmscale.evaluation import evaluate_checkpoint
from dsmscale.report.model_card import model_card
from dsmscale.report.provenance import git_commit
from dsmscale.weights import SHIPPED, WEIGHTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="default", choices=sorted(SHIPPED))
    parser.add_argument("--data", type=Path, required=True, help="folder holding A/ (and B/)")
    args = parser.parse_args()
    ckpt = slim_checkpoint(load_checkpoint(args.run / "best.pt"))
    target = save_checkpoint(ckpt, WEIGHTS / SHIPPED[args.name])
    metrics = {}
    for dataset in sorted(p for p in args.data.iterdir() if (p / "particles.parquet").is_file()):
        m = evaluate_checkpoint(target, dataset, "test", args.run / f"eval_{dataset.name}")
        metrics[dataset.name] = {k: m.get(k) for k in ("n", "obj_acc", "pix_acc", "miou",
                                                       "fsc_resolution_nm")}
    summary = args.data.parent / "summary.json"
    card = model_card(args.name, target, ckpt, metrics,
                      json.loads(summary.read_text()) if summary.is_file() else {},
                      " ".join(["python", *sys.argv]), git_commit())
    target.with_suffix(".md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
