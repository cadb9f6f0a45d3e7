"""Reproducing DSM-Net's Tables 1-3 on datasets A and B: every row trained, evaluated, recorded.

Each row is one `TrainConfig`, run in ``WORKDIR/runs/RUN_HASH`` (`dsmscale.training.runs`:
checkpoints resume; a finished row is evaluated once and its ``result.json`` reused), so the
experiment resumes where it stopped. Every row uses the same schedule: `EPOCHS` epochs of
one-cycle Adam (max lr 1e-3, betas 0.9/0.99), batch 64 run as micro-batches of 8 (accumulated
gradients, BatchNorm statistics per micro-batch), early stopping patience 15 — an epoch cap
instead of the paper's 100 epochs, so the table is affordable on 2 CPU cores. The rows of
`TRIED` change one thing of the procedure, to close a gap to the paper or to test a reading of
it; they are tabled apart. A finished row whose run folder is gone keeps the record
``results/reproduction.json`` holds of it. The tables are `dsmscale.report.reproduction`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

from dsmscale.checkpoints import load_checkpoint
from dsmscale.evaluation import evaluate_checkpoint
from dsmscale.io.atomic import write_file_atomic
from dsmscale.report.provenance import git_commit
from dsmscale.report.reproduction import write_results
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


def planned_rows(threads: int | None) -> list[tuple]:
    """Every row, common procedure first, then the tried ones: (dataset, model, weights,
    threads, changes)."""
    return ([(*r, threads, None) for r in ROWS]
            + [(*r[:3], threads, r[3]) for r in TRIED])


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
        "train_loss_first_last": [epochs[0]["train_total"], epochs[-1]["train_total"]],
        "run_hash": config.run_hash(), "n_test": metrics["n"], "commit": commit,
        "variant": label,
    }
    write_file_atomic(cached, lambda tmp: tmp.write_text(json.dumps(row, indent=2)))
    return row


def recorded_rows(results: Path) -> dict[str, dict]:
    """The rows results/reproduction.json already holds, by run hash. A row whose run folder is
    gone (a new machine, a cluster node's scratch disk) keeps what was measured."""
    path = results / "reproduction.json"
    return {r["run_hash"]: r for r in json.loads(path.read_text())} if path.is_file() else {}


def is_finished(config: TrainConfig, recorded: dict[str, dict]) -> bool:
    """A row has finished when its run folder holds result.json or results/reproduction.json
    records its run hash (its folder may be gone)."""
    return (Path(config.output) / "result.json").is_file() or config.run_hash() in recorded


def finished_rows(plan: list[tuple], data: Path, workdir: Path,
                  recorded: dict[str, dict]) -> list[dict]:
    """The results of the planned rows that have finished, in plan order: from the run folder
    when it is on disk (`row_record`), otherwise as ``recorded`` holds them."""
    rows = []
    for row in plan:
        config = row_config(data, workdir, *row)
        if is_finished(config, recorded):
            on_disk = (Path(config.output) / "result.json").is_file()
            rows.append(row_record(Path(config.output), config.dataset) if on_disk
                        else recorded[config.run_hash()])
    return rows


def pending_rows(plan: list[tuple], data: Path, workdir: Path,
                 recorded: dict[str, dict]) -> list[dict]:
    """The planned rows that have not finished, in plan order, with how far each has trained:
    the epochs in its run folder's history.json (none when it has not started), the first and
    last training loss and the last validation object accuracy."""
    pending = []
    for row in plan:
        config = row_config(data, workdir, *row)
        if is_finished(config, recorded):
            continue
        epochs = history(config)
        progress = {"epochs": len(epochs), "max_epochs": config.max_epochs,
                    "run_hash": config.run_hash()}
        if epochs:
            progress |= {"train_loss_first_last": [epochs[0]["train_total"],
                                                   epochs[-1]["train_total"]],
                         "val_obj_acc": epochs[-1].get("val_obj_acc"),
                         "precision": epochs[-1]["precision"], "threads": epochs[-1]["threads"]}
        pending.append(row_name(config) | progress)
    return pending


def row_record(out: Path, dataset: str) -> dict:
    """A finished row's result.json with all the tables take from its run folder, so that
    results/reproduction.json alone rebuilds them: its threads (rows cached before results
    recorded them), validation loss and object accuracy at the best and the last epoch
    (``val_best_last``), test F1 per class and, under the common procedure, the test scores of
    the last epoch."""
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
    return result


def last_epoch_scores(out: Path, dataset: str) -> dict:
    """Test scores of the weights training ended with (OUTPUT/last.pt) rather than of the epoch
    of lowest validation loss; evaluated once, cached in OUTPUT/eval_last."""
    cached = out / "eval_last" / "metrics.json"
    metrics = (json.loads(cached.read_text()) if cached.is_file() else
               evaluate_checkpoint(out / "last.pt", dataset, "test", out / "eval_last", threads=1))
    return {k: metrics.get(k) for k in SCORES}


def write_tables(data: Path, workdir: Path, results: Path, command: str, threads: int | None,
                 recorded: dict[str, dict]) -> list[dict]:
    """results/ from the finished rows and the progress of the common procedure's others; the
    finished rows."""
    every = planned_rows(threads)
    rows = finished_rows(every, data, workdir, recorded)
    pending = pending_rows(every[:len(ROWS)], data, workdir, recorded)
    schedule = schedule_text(row_config(data, workdir, *every[0]))
    write_results(rows, data, command, results, pending, schedule)
    return rows
