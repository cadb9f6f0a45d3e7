"""Reproduce DSM-Net's Tables 1-3 on our datasets A and B: every row trained, evaluated, tabled.

Usage:
    python jobs/reproduce_paper.py --data data/sim/datasets --workdir data/runs [--rows N]
                                   [--only dsmnet] [--tried] [--ray] [--tables-only]

Each row is one `TrainConfig`, cached by its hash under WORKDIR/runs/HASH (checkpoints resume; a
finished row is evaluated once and its result.json reused), so the script resumes where it
stopped. With --ray each row is a Ray task (num_gpus=1 where the cluster has GPUs) and a GPU
cluster runs the table in parallel. Every row uses the same schedule: EPOCHS epochs of one-cycle
Adam (max lr 1e-3, betas 0.9/0.99), batch 64 run as micro-batches of 8 (TrainConfig.micro_batch:
accumulated gradients, BatchNorm statistics per micro-batch), early stopping patience 15 — an
epoch cap instead of the paper's 100 epochs, so the table is affordable on 2 CPU cores. Writes
results/reproduction.json (one object per row), results/reproduction.md (ours beside the
paper's, with command, commit, data and wall time; targets; target share; per-class F1; made by
_reproduction_report.py) and results/reproduction.png. The rows of TRIED change one thing of the
procedure, to close a gap to the paper or to test a reading of it (--tried runs only them); they
are tabled apart, beside the same row under the common procedure. A row's run folder is locked
while it trains and the tables are always rebuilt from every finished row on disk, so processes
started with the same command (say, one 1-thread process per core) share out the rows; a
finished row whose run folder is gone keeps the record results/reproduction.json holds of it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _bench import git_commit
from _reproduction_report import write_results

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
def row_config(data: Path, workdir: Path, dataset: str, model: str, weights, threads,
               changes: dict | None = None):
    from dsmscale.train import TrainConfig

    cfg = dict(dataset=str(data / dataset), model=model, loss_weights=tuple(weights),
               max_epochs=EPOCHS, schedule=SCHEDULE, patience=15, batch_size=64,
               micro_batch=MICRO_BATCH, seed=0,
               threads=threads, output="unset") | (changes or {})
    run_hash = TrainConfig(**cfg).run_hash()
    return TrainConfig(**(cfg | {"output": str(workdir / "runs" / run_hash)}))


def schedule_text(config) -> str:
    """How every row is trained, from its `TrainConfig`."""
    micro = (f" in micro-batches of {config.micro_batch} (accumulated gradients, BatchNorm "
             "statistics per micro-batch)" if config.micro_batch < config.batch_size else "")
    return (f"{config.max_epochs} epochs {config.schedule} Adam (max lr {config.lr:g}, betas "
            f"{'/'.join(f'{b:g}' for b in config.betas)}), batch {config.batch_size}{micro}, "
            f"early stopping patience {config.patience}"
            f"{', channels_last_3d' if config.channels_last else ''}")


def converged(history: list[dict], heads, n_classes: int) -> bool:
    """Training converged if the loss fell by a quarter and classification beat twice chance."""
    falls = history[-1]["train_total"] < 0.75 * history[0]["train_total"]
    if "cls" in heads:
        return falls and history[-1].get("val_obj_acc", 0) > 2.0 / n_classes
    return falls


@contextmanager
def row_lock(out: Path) -> Iterator[bool]:
    """Hold the row's run folder for this process (an exclusive, non-blocking flock, released
    when the process ends however it ends); False if another process holds it. Two processes
    started with the same command on one machine thus share out the rows."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _variant(changes: dict | None) -> str | None:
    """A tried row's label, e.g. 'augment=True'; None under the common procedure."""
    return ", ".join(f"{k}={v}" for k, v in changes.items()) if changes else None


def row_name(config) -> dict:
    """A row's dataset, model and loss ratio cls:seg:rec (e.g. '1:10:1'), from its config."""
    return {"dataset": Path(config.dataset).name, "model": config.model,
            "loss_ratio": ":".join(f"{w:g}" for w in config.loss_weights)}


def run_row(config, variant: str | None = None) -> dict:
    """Train (or resume) and evaluate one row; cached in OUTPUT/result.json."""
    from dsmscale.checkpoints import load_checkpoint
    from dsmscale.evaluate import evaluate_checkpoint
    from dsmscale.io.atomic import write_file_atomic
    from dsmscale.train import train

    out = Path(config.output)
    cached = out / "result.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    commit = git_commit()
    result = train(config, progress=False)
    metrics = evaluate_checkpoint(out / "best.pt", config.dataset, "test", out / "eval",
                                  threads=config.threads)
    ckpt = load_checkpoint(out / "best.pt")
    history = result["history"]
    row = {
        **row_name(config), **{k: metrics.get(k) for k in SCORES},
        "converged": converged(history, ckpt["heads"], ckpt["n_classes"]),
        "epochs": len(history), "best_epoch": int(ckpt["epoch"]) + 1,
        "wall_s": sum(h["epoch_s"] for h in history), "precision": history[-1]["precision"],
        "threads": history[-1]["threads"],
        "train_loss_first_last": [history[0]["train_total"], history[-1]["train_total"]],
        "run_hash": config.run_hash(), "n_test": metrics["n"], "commit": commit,
        "variant": variant,
    }
    write_file_atomic(cached, lambda tmp: tmp.write_text(json.dumps(row, indent=2)))
    return row

def recorded_rows(results: Path) -> dict[str, dict]:
    """The rows results/reproduction.json already holds, by run hash. A row whose run folder is
    gone (a new machine, a cluster node's scratch disk) keeps what was measured."""
    path = results / "reproduction.json"
    return {r["run_hash"]: r for r in json.loads(path.read_text())} if path.is_file() else {}


def is_finished(config, recorded: dict[str, dict]) -> bool:
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
        out = Path(config.output)
        history = (json.loads((out / "history.json").read_text())
                   if (out / "history.json").is_file() else [])
        progress = {"epochs": len(history), "max_epochs": config.max_epochs,
                    "run_hash": config.run_hash()}
        if history:
            progress |= {"train_loss_first_last": [history[0]["train_total"],
                                                   history[-1]["train_total"]],
                         "val_obj_acc": history[-1].get("val_obj_acc"),
                         "precision": history[-1]["precision"],
                         "threads": history[-1]["threads"]}
        pending.append(row_name(config) | progress)
    return pending


def row_record(out: Path, dataset: str) -> dict:
    """A finished row's result.json with all the tables take from its run folder, so that
    results/reproduction.json alone rebuilds them: its threads (rows cached before results
    recorded them), validation loss and object accuracy at the best and the last epoch
    (``val_best_last``), test F1 per class and, under the common procedure, the test scores of
    the last epoch."""
    result = json.loads((out / "result.json").read_text())
    history = json.loads((out / "history.json").read_text())
    best, last = history[result["best_epoch"] - 1], history[-1]
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
    from dsmscale.evaluate import evaluate_checkpoint

    cached = out / "eval_last" / "metrics.json"
    metrics = (json.loads(cached.read_text()) if cached.is_file() else
               evaluate_checkpoint(out / "last.pt", dataset, "test", out / "eval_last", threads=1))
    return {k: metrics.get(k) for k in SCORES}


def write_tables(every: list[tuple], args, command: str, recorded: dict[str, dict],
                 schedule: str) -> list[dict]:
    """results/ from the finished rows and the progress of the common procedure's others; the
    finished rows."""
    rows = finished_rows(every, args.data, args.workdir, recorded)
    pending = pending_rows(every[:len(ROWS)], args.data, args.workdir, recorded)
    write_results(rows, args.data, command, args.results, pending, schedule)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding A/ and B/")
    parser.add_argument("--workdir", type=Path, required=True, help="runs are cached here")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--rows", type=int, default=len(ROWS), help="run only the first N rows")
    parser.add_argument("--only", help="run only rows of this model (with --tried too)")
    parser.add_argument("--tried", action="store_true",
                        help="run only the rows that change the procedure (TRIED)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ray", action="store_true", help="one Ray task per row")
    parser.add_argument("--tables-only", action="store_true",
                        help="rewrite results/ from the finished rows; train nothing")
    args = parser.parse_args()
    command = "python jobs/reproduce_paper.py " + " ".join(  # the command that trains the rows
        a for a in sys.argv[1:] if a not in ("--tables-only", "--tried"))
    every = [(*r, args.threads, None) for r in ROWS] + [(*r[:3], args.threads, r[3]) for r in TRIED]
    selected = [row for row in (every[len(ROWS):] if args.tried else every[:args.rows])
                if not args.only or row[1] == args.only]
    recorded = recorded_rows(args.results)  # finished: not trained again, even without a folder
    configs = [(config, _variant(row[4])) for row in selected
               if (config := row_config(args.data, args.workdir, *row)).run_hash() not in recorded]
    schedule = schedule_text(row_config(args.data, args.workdir, *every[0]))
    if args.ray and not args.tables_only:
        import ray

        from dsmscale.parallel import ensure_ray

        ensure_ray()
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, num_cpus=1)(run_row)
        ray.get([task.remote(*c) for c in configs])
    elif not args.tables_only:
        for config, variant in configs:
            start = time.perf_counter()
            with row_lock(Path(config.output)) as mine:
                if not mine:
                    print(f"{config.output}: being trained by another process; next row",
                          flush=True)
                    continue
                row = run_row(config, variant)
            print(f"{row['dataset']} {row['model']} {row['loss_ratio']} {variant or ''}: "
                  f"obj_acc {row['obj_acc']} miou {row['miou']} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            write_tables(every, args, command, recorded, schedule)
    rows = write_tables(every, args, command, recorded, schedule)
    print(json.dumps(rows[-1] if rows else {}))


if __name__ == "__main__":
    main()
