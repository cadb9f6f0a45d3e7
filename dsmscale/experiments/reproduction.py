"""Reproducing DSM-Net's Tables 1-3 on datasets A and B: every row trained, evaluated, recorded.

Each row is one `TrainConfig`, run in ``WORKDIR/runs/RUN_HASH`` (`dsmscale.training.runs`:
checkpoints resume; a finished row is evaluated once and its ``result.json`` reused), so the
experiment resumes where it stopped. Every row uses the same schedule: `EPOCHS` epochs of
one-cycle Adam (max lr 1e-3, betas 0.9/0.99), batch 64 run as micro-batches of 8 (accumulated
gradients, BatchNorm statistics per micro-batch), early stopping patience 15 — an epoch cap
instead of the paper's 100 epochs, so the table is affordable on 2 CPU cores. The rows of
`TRIED` change one thing of the procedure, to close a gap to the paper or to test a reading of
it; they are tabled apart. `SEED_ROWS` retrain DSM-Net, Cls and Seg with other seeds, for the
spread a training seed makes. Each row is also scored on a held-out simulation of its dataset
(another seed's tomogram, every box), and the paper's claims (`CLAIMS`) are tested pairwise on the
same boxes (`dsmscale.statistics`). A finished row whose run folder is gone keeps the record
``results/reproduction.json`` holds of it, and its per-box results are kept in
``results/reproduction_boxes`` (`PER_BOX`), so that a claim stays tested, and can be tested
against a row trained later, when the run folders are gone. The tables are
`dsmscale.report.reproduction`'s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from dsmscale.checkpoints import load_checkpoint
from dsmscale.evaluation import evaluate_checkpoint
from dsmscale.io.atomic import write_file_atomic
from dsmscale.report.provenance import git_commit
from dsmscale.report.reproduction import CLAIMS, write_results
from dsmscale.statistics import mcnemar, paired_bootstrap_accuracy, paired_bootstrap_miou, verdict
from dsmscale.training import TrainConfig
from dsmscale.training.runs import history, in_workdir, trained_checkpoint

EPOCHS = 24
MICRO_BATCH = 8
SCHEDULE = "onecycle"
PAPER_WEIGHTS = (1.0, 10.0, 1.0)
#: The test scores a row records (from `evaluate_checkpoint`).
SCORES = ("pix_acc", "miou", "obj_acc", "fsc_resolution_nm")
#: (dataset, model, loss weights cls:seg:rec), in the order they are run.
ROWS = [
    ("A", "dsmnet", PAPER_WEIGHTS), ("A", "cls", PAPER_WEIGHTS), ("A", "seg", PAPER_WEIGHTS),
    ("B", "cls", PAPER_WEIGHTS), ("B", "dsmnet", PAPER_WEIGHTS), ("B", "seg", PAPER_WEIGHTS),
    ("A", "cls_seg", PAPER_WEIGHTS), ("A", "cls_rec", PAPER_WEIGHTS), ("A", "ssn3d_ed", PAPER_WEIGHTS),
    ("B", "ssn3d_ed", PAPER_WEIGHTS), ("B", "cls_seg", PAPER_WEIGHTS), ("B", "cls_rec", PAPER_WEIGHTS),
    ("A", "dsmnet", (1.0, 1.0, 1.0)), ("A", "dsmnet", (1.0, 100.0, 1.0)),
    ("A", "dsrf3d_v2", PAPER_WEIGHTS), ("B", "dsrf3d_v2", PAPER_WEIGHTS),
]
#: One change to the common procedure each: (dataset, model, loss weights, TrainConfig changes).
TRIED = [
    ("A", "dsmnet", PAPER_WEIGHTS, {"augment": True}),
    ("B", "dsmnet", PAPER_WEIGHTS, {"monitor": "val_score"}),
    ("A", "dsmnet", PAPER_WEIGHTS, {"batch_norm": False}),
    ("A", "dsrf3d_v2", PAPER_WEIGHTS, {"batch_norm": False}),
]
#: Training seeds beyond the common procedure's 0, for DSM-Net and its single-task subnets.
SEED_ROWS = [(dataset, model, PAPER_WEIGHTS, {"seed": seed}) for dataset in ("A", "B")
             for seed in (1, 2) for model in ("dsmnet", "cls", "seg")]
#: The sets a row is scored on, by name, with the folder of its run folder that holds the
#: evaluation (and its per-box results).
TEST_SETS = (("test split", "eval"), ("held-out", "eval_heldout"))
#: The folder of results/ that keeps each finished row's per-box results, as
#: RUN_HASH-FOLDER.npz (FOLDER of `TEST_SETS`): the paired tests outlive the run folders.
PER_BOX = "reproduction_boxes"


def planned_rows(threads: int | None) -> list[tuple]:
    """Every row, common procedure first, then the tried ones, then the other seeds: (dataset,
    model, weights, threads, changes)."""
    return ([(*r, threads, None) for r in ROWS]
            + [(*r[:3], threads, r[3]) for r in TRIED + SEED_ROWS])


def row_config(data: Path, workdir: Path, dataset: str, model: str, weights, threads,
               changes: dict | None = None) -> TrainConfig:
    """A row's training config, its output in the run cache."""
    config = TrainConfig(**{
        "dataset": str(data / dataset), "model": model, "loss_weights": tuple(weights),
        "max_epochs": EPOCHS, "schedule": SCHEDULE, "patience": 15, "batch_size": 64,
        "micro_batch": MICRO_BATCH, "seed": 0, "threads": threads, "output": "unset",
        **(changes or {})})
    return in_workdir(config, workdir)


def schedule_text(config: TrainConfig) -> str:
    """How every row is trained, from its `TrainConfig`."""
    micro = (f" in micro-batches of {config.micro_batch} (accumulated gradients, BatchNorm "
             "statistics per micro-batch)" if config.micro_batch < config.batch_size else "")
    return (f"{config.max_epochs} epochs {config.schedule} Adam (max lr {config.lr:g}, betas "
            f"{'/'.join(f'{b:g}' for b in config.betas)}), batch {config.batch_size}{micro}, "
            f"early stopping patience {config.patience}"
            f"{', channels_last_3d' if config.channels_last else ''}")


def converged(epochs: list[dict], heads, n_classes: int) -> bool:
    """Training converged if the loss fell by a quarter and classification beat twice chance."""
    falls = epochs[-1]["train_total"] < 0.75 * epochs[0]["train_total"]
    if "cls" in heads:
        return falls and epochs[-1].get("val_obj_acc", 0) > 2.0 / n_classes
    return falls


def variant(changes: dict | None) -> str | None:
    """A tried row's label, e.g. 'augment=True'; None under the common procedure."""
    return ", ".join(f"{k}={v}" for k, v in changes.items()) if changes else None


def row_name(config: TrainConfig) -> dict:
    """A row's dataset, model and loss ratio cls:seg:rec (e.g. '1:10:1'), from its config."""
    return {"dataset": Path(config.dataset).name, "model": config.model,
            "loss_ratio": ":".join(f"{w:g}" for w in config.loss_weights)}


def run_row(config: TrainConfig, label: str | None = None) -> dict:
    """Train (or resume) and evaluate one row; cached in OUTPUT/result.json."""
    out = Path(config.output)
    cached = out / "result.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    commit = git_commit()
    best = trained_checkpoint(config)
    metrics = evaluate_checkpoint(best, config.dataset, "test", out / "eval",
                                  threads=config.threads)
    ckpt = load_checkpoint(best)
    epochs = history(config)
    row = {
        **row_name(config), **{k: metrics.get(k) for k in SCORES},
        "converged": converged(epochs, ckpt["heads"], ckpt["n_classes"]),
        "epochs": len(epochs), "best_epoch": int(ckpt["epoch"]) + 1,
        "wall_s": sum(h["epoch_s"] for h in epochs), "precision": epochs[-1]["precision"],
        "threads": epochs[-1]["threads"],
        "machine": "; ".join(dict.fromkeys(h.get("machine", "not recorded") for h in epochs)),
        "train_loss_first_last": [epochs[0]["train_total"], epochs[-1]["train_total"]],
        "run_hash": config.run_hash(), "n_test": metrics["n"], "commit": commit,
        "variant": label, "seed": config.seed,
    }
    write_file_atomic(cached, lambda tmp: tmp.write_text(json.dumps(row, indent=2)))
    return row


def recorded_rows(results: Path) -> dict[str, dict]:
    """The rows results/reproduction.json already holds, by run hash. A row whose run folder is
    gone (a new machine, a cluster node's scratch disk) keeps what was measured."""
    path = results / "reproduction.json"
    if not path.is_file():
        return {}
    return {r["run_hash"]: r for r in json.loads(path.read_text())["rows"]}


def row_key(row: dict) -> tuple:
    """What a row is, whatever code ran it: dataset, model, loss ratio and its change of the
    common procedure (None under it)."""
    return row["dataset"], row["model"], row["loss_ratio"], row.get("variant") or None


def earlier_record(config: TrainConfig, label: str | None,
                   recorded: dict[str, dict]) -> dict | None:
    """The record of the same row made under another run identity (the code changed since:
    a training option, the architecture or procedure version), shown until the row is trained
    again; None when there is none."""
    key = (*row_name(config).values(), label)
    return next((r for r in recorded.values() if row_key(r) == key), None)


def is_finished(config: TrainConfig, recorded: dict[str, dict]) -> bool:
    """A row has finished when its run folder holds result.json or results/reproduction.json
    records its run hash (its folder may be gone)."""
    return (Path(config.output) / "result.json").is_file() or config.run_hash() in recorded


def finished_rows(plan: list[tuple], data: Path, workdir: Path,
                  recorded: dict[str, dict], heldout: Path | None = None) -> list[dict]:
    """The results of the planned rows that have finished, in plan order: from the run folder
    when it is on disk (`row_record`; scored on ``heldout/DATASET`` too when given), otherwise as
    ``recorded`` holds them; a row not finished under its current run identity by its
    `earlier_record`, marked ``earlier_identity``."""
    rows = []
    for row in plan:
        config = row_config(data, workdir, *row)
        if is_finished(config, recorded):
            on_disk = (Path(config.output) / "result.json").is_file()
            rows.append(row_record(Path(config.output), config.dataset, heldout) if on_disk
                        else recorded[config.run_hash()])
        elif earlier := earlier_record(config, variant(row[4]), recorded):
            rows.append(earlier | {"earlier_identity": True})
    return rows


def pending_rows(plan: list[tuple], data: Path, workdir: Path,
                 recorded: dict[str, dict]) -> list[dict]:
    """The planned rows that have not finished, in plan order, with how far each has trained:
    the epochs in its run folder's history.json (none when it has not started), the first and
    last training loss and the last validation object accuracy, and whether the tables hold an
    `earlier_record` of it."""
    pending = []
    for row in plan:
        config = row_config(data, workdir, *row)
        if is_finished(config, recorded):
            continue
        epochs = history(config)
        progress = {"epochs": len(epochs), "max_epochs": config.max_epochs,
                    "run_hash": config.run_hash(),
                    "earlier": earlier_record(config, variant(row[4]), recorded) is not None}
        if epochs:
            progress |= {"train_loss_first_last": [epochs[0]["train_total"],
                                                   epochs[-1]["train_total"]],
                         "val_obj_acc": epochs[-1].get("val_obj_acc"),
                         "precision": epochs[-1]["precision"], "threads": epochs[-1]["threads"]}
        pending.append(row_name(config) | progress)
    return pending


def row_record(out: Path, dataset: str, heldout: Path | None = None) -> dict:
    """A finished row's result.json with all the tables take from its run folder, so that
    results/reproduction.json alone rebuilds them: its threads (rows cached before results
    recorded them), validation loss and object accuracy at the best and the last epoch
    (``val_best_last``), test F1 per class, under the common procedure the test scores of
    the last epoch, and its scores on ``heldout/DATASET`` (``heldout``) when that exists."""
    result = json.loads((out / "result.json").read_text())
    epochs = json.loads((out / "history.json").read_text())
    best, last = epochs[result["best_epoch"] - 1], epochs[-1]
    result.setdefault("threads", last["threads"])
    result["val_best_last"] = {k: [best[k], last[k]] for k in ("val_total", "val_obj_acc")
                               if k in last}
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    if "f1_per_class" in metrics:
        result["f1_per_class"] = metrics["f1_per_class"]
    if not result.get("variant"):
        result["last_epoch"] = last_epoch_scores(out, dataset)
    if heldout is not None and (heldout / Path(dataset).name).is_dir():
        result["heldout"] = heldout_scores(out, heldout / Path(dataset).name)
    return result


def heldout_scores(out: Path, dataset: Path) -> dict:
    """The row's best checkpoint scored on every box of ``dataset`` (a simulation of the row's
    dataset with another seed: a tomogram it never saw); evaluated once, cached in
    OUTPUT/eval_heldout (with its per-box results for the paired tests)."""
    cached = out / "eval_heldout" / "metrics.json"
    metrics = (json.loads(cached.read_text()) if cached.is_file() else
               evaluate_checkpoint(out / "best.pt", dataset, ["train", "val", "test"],
                                   out / "eval_heldout"))
    return {k: metrics.get(k) for k in SCORES} | {"n": metrics["n"], "data": str(dataset)}


def paired_test(a: Path, b: Path, metric: str, claim_a_better: bool) -> dict:
    """Model a against model b on the same boxes, from their ``per_box.npz``: McNemar's test of
    object accuracy (boxes of known class) with a paired bootstrap interval of its difference,
    or a paired bootstrap of mIoU; the difference a − b, its p-value and/or 95 % interval and
    the verdict on the claim that a is (or is not) better."""
    with np.load(a) as box_a, np.load(b) as box_b:
        if not np.array_equal(box_a["index"], box_b["index"]):
            raise ValueError(f"{a} and {b} hold different boxes; evaluate both on one split")
        if metric == "obj_acc":
            known = box_a["label"] >= 0
            correct = [box["predicted"][known] == box_a["label"][known] for box in (box_a, box_b)]
            test = mcnemar(*correct)
            size = paired_bootstrap_accuracy(*correct)
            found = {"n": test.n, "p_value": test.p_value, "only_a": test.only_a,
                     "only_b": test.only_b, "interval": [size.low, size.high]}
        else:
            test = paired_bootstrap_miou(box_a["counts"], box_b["counts"])
            found = {"n": len(box_a["counts"]), "interval": [test.low, test.high]}
    return found | {"difference": test.difference, "verdict": verdict(test, claim_a_better)}


def kept_per_box(results: Path, run_hash: str, folder: str) -> Path:
    """Where results/ keeps a row's per-box results on one test set (`PER_BOX`)."""
    return results / PER_BOX / f"{run_hash}-{folder}.npz"


def keep_per_box(plan: list[tuple], data: Path, workdir: Path, results: Path) -> None:
    """Copy the per-box results of every planned row whose run folder holds them into
    results/ (`kept_per_box`), once."""
    for row in plan:
        config = row_config(data, workdir, *row)
        for _, folder in TEST_SETS:
            source = Path(config.output) / folder / "per_box.npz"
            kept = kept_per_box(results, config.run_hash(), folder)
            if source.is_file() and not kept.is_file():
                kept.parent.mkdir(parents=True, exist_ok=True)
                write_file_atomic(kept, lambda tmp, s=source: shutil.copyfile(s, tmp))


def recorded_claims(results: Path) -> dict[tuple, dict]:
    """The claim tests results/reproduction.json holds, by `claim_key`; each names the run
    hashes of its two rows (``runs``)."""
    path = results / "reproduction.json"
    claims = json.loads(path.read_text())["claims"] if path.is_file() else []
    return {claim_key(c): c for c in claims}


def claim_key(claim: dict) -> tuple:
    """Which claim a test is of, and on which test set."""
    return claim["dataset"], claim["a"], claim["b"], claim["metric"], claim["test_set"]


def claim_tests(data: Path, workdir: Path, threads: int | None, results: Path,
                recorded: dict[tuple, dict]) -> list[dict]:
    """Each of the paper's `CLAIMS` tested on each test set both rows (common procedure, seed
    0) were scored on, from their per-box results in their run folders or, where those are
    gone, kept in results/ (`keep_per_box`); where neither has them, the ``recorded`` test of
    the same two runs (`recorded_claims`)."""
    tests = []
    for dataset, a, b, metric, a_better in CLAIMS:
        configs = [row_config(data, workdir, dataset, model, PAPER_WEIGHTS, threads)
                   for model in (a, b)]
        runs = [config.run_hash() for config in configs]
        for name, folder in TEST_SETS:
            claim = {"dataset": dataset, "a": a, "b": b, "metric": metric,
                     "claim_a_better": a_better, "test_set": name, "runs": runs}
            files = [next((f for f in (Path(config.output) / folder / "per_box.npz",
                                       kept_per_box(results, run, folder)) if f.is_file()), None)
                     for config, run in zip(configs, runs, strict=True)]
            if all(files):
                tests.append(claim | paired_test(*files, metric, a_better))
            elif (earlier := recorded.get(claim_key(claim))) and earlier["runs"] == runs:
                tests.append(earlier)
    return tests


def last_epoch_scores(out: Path, dataset: str) -> dict:
    """Test scores of the weights training ended with (OUTPUT/last.pt) rather than of the epoch
    of lowest validation loss; evaluated once, cached in OUTPUT/eval_last."""
    cached = out / "eval_last" / "metrics.json"
    metrics = (json.loads(cached.read_text()) if cached.is_file() else
               evaluate_checkpoint(out / "last.pt", dataset, "test", out / "eval_last", threads=1))
    return {k: metrics.get(k) for k in SCORES}


def write_tables(data: Path, workdir: Path, results: Path, command: str, threads: int | None,
                 recorded: dict[str, dict], heldout: Path | None = None) -> list[dict]:
    """results/ from the finished rows (scored on ``heldout`` too when given), the paired tests
    of the paper's claims and the progress of the common procedure's other rows; the finished
    rows."""
    every = planned_rows(threads)
    rows = finished_rows(every, data, workdir, recorded, heldout)
    keep_per_box(every, data, workdir, results)
    claims = claim_tests(data, workdir, threads, results, recorded_claims(results))
    pending = pending_rows(every[:len(ROWS)], data, workdir, recorded)
    schedule = schedule_text(row_config(data, workdir, *every[0]))
    write_results(rows, data, command, results, pending, schedule, claims)
    return rows
