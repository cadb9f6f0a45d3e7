"""Ship a trained run as a package model: a slim checkpoint plus its model card.

Usage: python jobs/ship_model.py RUN_DIR --name default --data data/sim/datasets
                                  [--scores results/default_model.json --label default]

Copies RUN_DIR/best.pt without optimiser state (`dsmscale.checkpoints.slim_checkpoint`) into
dsmscale/weights/, evaluates it on the test split of every dataset under --data, and writes
dsmscale/weights/<file>.md (`dsmscale.report.model_card`) with the data, config, training time
(RUN_DIR/history.json; the machine is this one's: ship on the machine that trained), metrics,
command and commit. With --scores, the card also gives the model's scores on tomograms it never
saw, as `jobs/default_model.py` measured them for the model it labelled --label (the same
checkpoint: its weights are checked against RUN_DIR/best.pt).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from dsmscale.checkpoints import load_checkpoint, save_checkpoint, slim_checkpoint
from dsmscale.evaluation import evaluate_checkpoint
from dsmscale.hardware import machine_name
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


def training_record(run: Path) -> dict:
    """Epochs, summed epoch time, precision and threads of the run (history.json), and this
    machine."""
    history = json.loads((run / "history.json").read_text())
    return {"epochs": len(history), "wall_s": sum(h["epoch_s"] for h in history),
            "precision": history[-1]["precision"], "threads": history[-1]["threads"],
            "machine": machine_name()}


def held_out_scores(scores: Path, label: str, run: Path) -> dict[str, dict]:
    """The sets `jobs/default_model.py` scored the model labelled ``label`` on, with n,
    object accuracy and mIoU; refused unless it scored this run's best.pt."""
    model = json.loads(scores.read_text())["models"][label]
    mine = load_checkpoint(run / "best.pt")["state_dict"]
    theirs = load_checkpoint(model["checkpoint"])["state_dict"]
    if mine.keys() != theirs.keys() or any(not torch.equal(mine[k], theirs[k]) for k in mine):
        raise SystemExit(f"{scores}: '{label}' scored {model['checkpoint']}, not {run}/best.pt")
    sets = {f"{d}'s settings, another seed (every box)": s for d, s in model.get("heldout", {}).items()}
    if "randomised" in model:
        sets["randomised tomograms of other seeds"] = model["randomised"]["all"]
        sets["randomised tomograms at SNR ≥ 0.03"] = model["randomised"]["snr_ge_0.03"]
    sets |= {f"foreign zero-shot `{f}`": s for f, s in model.get("foreign", {}).items()}
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="default", choices=sorted(SHIPPED))
    parser.add_argument("--data", type=Path, required=True, help="folder holding A/ (and B/)")
    parser.add_argument("--scores", type=Path, default=None,
                        help="jobs/default_model.py's JSON holding this run's held-out scores")
    parser.add_argument("--label", default=None, help="the model's label in --scores")
    args = parser.parse_args()
    held_out = held_out_scores(args.scores, args.label or args.name, args.run) if args.scores else None
    ckpt = slim_checkpoint(load_checkpoint(args.run / "best.pt"))
    target = save_checkpoint(ckpt, WEIGHTS / SHIPPED[args.name])
    summary = args.data.parent / "summary.json"  # the simulator's, beside the test datasets
    test_snr = json.loads(summary.read_text()).get("snr_measured", {}) if summary.is_file() else {}
    metrics = {}
    for dataset in sorted(p for p in args.data.iterdir() if (p / "particles.parquet").is_file()):
        m = evaluate_checkpoint(target, dataset, "test", args.run / f"eval_{dataset.name}")
        metrics[dataset.name] = {k: m.get(k) for k in ("n", "obj_acc", "pix_acc", "miou",
                                                       "fsc_resolution_nm")}
        metrics[dataset.name]["snr"] = test_snr.get(dataset.name)
    card = model_card(args.name, target, ckpt, metrics, training_data_info(ckpt, args.data),
                      " ".join(["python", *sys.argv]), git_commit(), training_record(args.run),
                      held_out, f"`{args.scores}`, `jobs/default_model.py`")
    target.with_suffix(".md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
