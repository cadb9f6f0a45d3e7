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

import pandas as pd

from dsmscale.checkpoints import load_checkpoint, save_checkpoint, slim_checkpoint
from dsmscale.evaluation import evaluate_checkpoint
from dsmscale.report.model_card import model_card
from dsmscale.report.provenance import git_commit
from dsmscale.weights import SHIPPED, WEIGHTS


def training_data_info(ckpt: dict, data: Path) -> dict:
    """What the card says about the training data: a randomised set's config and drawn
    conditions (beside its dataset folder), else the simulator's summary.json beside --data."""
    randomised = Path(ckpt["config"]["dataset"]).parent
    if (randomised / "randomised.json").is_file():
        return {"randomised": json.loads((randomised / "randomised.json").read_text()),
                "conditions": pd.read_parquet(randomised / "conditions.parquet"
                                              ).to_dict(orient="records")}
    summary = data.parent / "summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else {}


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
    card = model_card(args.name, target, ckpt, metrics, training_data_info(ckpt, args.data),
                      " ".join(["python", *sys.argv]), git_commit())
    target.with_suffix(".md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
