"""The tables of the paper reproduction (`dsmscale.experiments.reproduction`):
results/reproduction.{md,json,png} and reproduction_claims.png from finished rows.

Ours beside the paper's, the issue's targets met or missed, the scores on held-out tomograms,
the paper's claims tested on the same boxes, the spread of training seeds, where the target
fills how much of the box (ours measured, the paper's implied by its scores), the rows that tried
a change of the procedure, per-class F1 of the DSM-Net rows, and a figure of ours against the
paper's, and a forest plot of the claims' differences.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.dataset import open_dataset_array, read_dataset_table
from dsmscale.metrics import target_share_bounds
from dsmscale.report.figures import plt, save_figure

#: The paper's figures (Liu et al. 2018, Tables 1-2): pixel acc, mIoU, object acc (%).
PAPER = {
    ("A", "ssn3d_ed"): (98.99, 84.68, None), ("A", "seg"): (99.03, 87.07, None),
    ("A", "cls"): (None, None, 76.24), ("A", "cls_rec"): (None, None, 81.87),
    ("A", "cls_seg"): (99.22, 88.70, 84.37), ("A", "dsmnet"): (99.21, 89.00, 93.75),
    ("B", "ssn3d_ed"): (98.15, 76.43, None), ("B", "seg"): (98.37, 79.70, None),
    ("B", "cls"): (None, None, 43.75), ("B", "dsmnet"): (98.59, 81.40, 53.12),
    ("A", "dsrf3d_v2"): ("did not converge",) * 3, ("B", "dsrf3d_v2"): ("did not converge",) * 3,
}


#: Models with more than one task against the single-task models of each score.
MULTI_TASK = ("dsmnet", "cls_seg", "cls_rec")
SINGLE_TASK = {"obj_acc": ("cls",), "miou": ("seg", "ssn3d_ed")}


def paper_claims() -> list[tuple[str, str, str, str, bool]]:
    """The paper's claims that a multi-task model beats (or not) a single-task one on a score:
    (dataset, multi-task model, single-task model, score, the paper's a > b), for every pair
    the paper gives both figures of."""
    index = {"miou": 1, "obj_acc": 2}
    claims = []
    for (dataset, a), figures in PAPER.items():
        for metric, singles in SINGLE_TASK.items():
            for b in singles:
                theirs = PAPER.get((dataset, b), (None,) * 3)[index[metric]]
                ours = figures[index[metric]]
                if a in MULTI_TASK and isinstance(ours, float) and isinstance(theirs, float):
                    claims.append((dataset, a, b, metric, ours > theirs))
    return claims


CLAIMS = paper_claims()
#: The issue's targets for DSM-Net at 1:10:1: (object accuracy, mIoU) per dataset.
TARGETS = {"A": (0.94, 0.89), "B": (0.54, 0.814)}


def target_lines(rows: list[dict], title: str = "Targets") -> list[str]:
    """Each target and comparison, met or missed by how much (pending until its rows exist)."""
    found = {(r["dataset"], r["model"]): r for r in rows if r["loss_ratio"] == "1:10:1"}

    def check(label: str, ours: float | None, bar: float | None, strict: bool = False) -> str:
        if ours is None or bar is None:
            return f"- {label}: pending (row not run yet)"
        met = ours > bar if strict else ours >= bar
        verdict = "met" if met else f"missed by {(bar - ours) * 100:.2f} points"
        return f"- {label}: {ours * 100:.2f} vs {bar * 100:.2f} — {verdict}"

    lines = ["", f"## {title}", ""]
    for ds, (acc, miou) in TARGETS.items():
        net = found.get((ds, "dsmnet"), {})
        cls, seg = found.get((ds, "cls"), {}), found.get((ds, "seg"), {})
        lines += [check(f"{ds}: DSM-Net object accuracy ≥ {acc * 100:g} %", net.get("obj_acc"), acc),
                  check(f"{ds}: DSM-Net mIoU ≥ {miou * 100:g} %", net.get("miou"), miou),
                  check(f"{ds}: DSM-Net accuracy above the Cls subnet's", net.get("obj_acc"),
                        cls.get("obj_acc"), strict=True),
                  check(f"{ds}: DSM-Net mIoU above the Seg subnet's", net.get("miou"),
                        seg.get("miou"), strict=True)]
    return lines


def _fmt(value, scale=100.0):
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value * scale:.2f}"


def write_results(rows: list[dict], data: Path, command: str, results: Path,
                  pending: list[dict], schedule: str, claims: list[dict] | None = None) -> None:
    """results/reproduction.{json,md,png} from the finished rows (common procedure, tried and
    other seeds), which hold all the tables need; ``pending`` holds the common procedure's
    unfinished rows and how far each has trained (`dsmscale.experiments.reproduction.
    pending_rows`), ``schedule`` how every row was trained, ``claims`` the paired tests of the
    paper's claims (`dsmscale.experiments.reproduction.claim_tests`)."""
    results.mkdir(exist_ok=True)
    claims = claims or []
    _write(results / "reproduction.json", json.dumps({"rows": rows, "claims": claims}, indent=2))
    table = [r for r in rows if not r.get("variant")]
    lines = header_lines(rows, data, command, schedule) + main_table_lines(table)
    lines += test_split_lines(table, data)
    lines += target_lines(table)
    lines += heldout_lines(table)
    lines += claim_lines(claims)
    if claims_figure(claims, results / "reproduction_claims.png"):
        lines += ["", "![the claims: our a − b with its 95 % interval, the paper's as ×]"
                      "(reproduction_claims.png)"]
    lines += seed_lines(rows)
    lines += loss_ratio_lines(table)
    lines += convergence_lines(table)
    lines += pending_lines(pending, len(table) + sum(not p.get("earlier") for p in pending))
    lines += last_epoch_lines(table)
    lines += share_lines(table, data)
    lines += tried_lines(rows)
    lines += per_class_lines(rows, data)
    if comparison_figure(table, results / "reproduction.png"):
        lines += ["", "![ours against the paper's](reproduction.png)"]
    _write(results / "reproduction.md", "\n".join(lines) + "\n")


def pending_lines(pending: list[dict], planned: int) -> list[str]:
    """The rows that have not finished and how far each has trained."""
    if not pending:
        return []
    lines = ["", f"{len(pending)} of {planned} rows have not finished under the current code; "
                 "rerun the command to "
                 "continue (finished rows are cached, a row in training resumes from its last "
                 "epoch):", ""]
    for p in pending:
        name = f"- {row_label(p)}" + (" (the table holds its earlier run)" if p.get("earlier")
                                      else "")
        if not p["epochs"]:
            lines.append(f"{name}: not started")
            continue
        first, last = p["train_loss_first_last"]
        lines.append(f"{name}: {p['epochs']} of at most {p['max_epochs']} epochs trained (run "
                     f"`{p['run_hash']}`, {p['precision']}, {p['threads']} threads); training "
                     f"loss {first:.3f} → {last:.3f}, validation object accuracy "
                     f"{_fmt(p['val_obj_acc'])} % at the last epoch")
    return lines


def loss_ratio_lines(table: list[dict]) -> list[str]:
    """DSM-Net at each loss ratio cls:seg:rec side by side (the issue's 1:1, 1:10 and 1:100; our
    reference holds no paper figures for them), per dataset with more than one ratio, the
    segmentation weight rising, and which ratio scored best in each."""
    by_dataset: dict[str, list[dict]] = {}
    for r in table:
        if r["model"] == "dsmnet":
            by_dataset.setdefault(r["dataset"], []).append(r)
    by_dataset = {ds: sorted(rs, key=lambda r: float(r["loss_ratio"].split(":")[1]))
                  for ds, rs in by_dataset.items() if len(rs) > 1}
    if not by_dataset:
        return []
    lines = ["", "## Loss ratio (DSM-Net)", "",
             "The same DSM-Net trained with the loss weights cls:seg:rec below; test split.", "",
             "| dataset | loss cls:seg:rec | pixel acc | mIoU | object acc | FSC 0.5 (nm) |",
             "|---|---|---|---|---|---|"]
    for ds, rs in by_dataset.items():
        lines += [f"| {ds} | {r['loss_ratio']} | {_fmt(r['pix_acc'])} | {_fmt(r['miou'])} | "
                  f"{_fmt(r['obj_acc'])} | {_fmt(r.get('fsc_resolution_nm'), 1)} |" for r in rs]
    lines.append("")
    for ds, rs in by_dataset.items():
        lines.append(f"- {ds}: best mIoU at {max(rs, key=lambda r: r['miou'])['loss_ratio']}, "
                     f"best object accuracy at {max(rs, key=lambda r: r['obj_acc'])['loss_ratio']}.")
    return lines


def convergence_lines(table: list[dict]) -> list[str]:
    """Whether DSRF3D-v2 converged here, against the paper's report that it did not, with the
    evidence (training loss at the first and last epoch) and our architectural difference."""
    rows = [r for r in table if r["model"] == "dsrf3d_v2"]
    if not rows:
        return []
    lines = ["", "## DSRF3D-v2 and convergence", "",
             "The paper reports that DSRF3D-v2 did not converge on its crowded subtomograms. Here "
             "(converged = the last epoch's mean training loss below three quarters of the "
             "first's, and the last epoch's validation object accuracy above twice chance):", ""]
    lines += [f"- {r['dataset']}: {'converged' if r['converged'] else 'did not converge'} — "
              f"{_loss_fall(r)} over {r['epochs']} epochs; test object accuracy "
              f"{_fmt(r['obj_acc'])} %." for r in rows]
    return lines + [
        "", "Our DSRF3D-v2 has batch normalisation after every 3³ conv, as our DSM-Net has "
        "(`dsmscale.models.baselines`); the plain reading without it is the tried row "
        "`batch_norm=False` (`--tried`)."]


def _loss_fall(row: dict) -> str:
    """The evidence of (non-)convergence: the training loss at the first and the last epoch."""
    first, last = row["train_loss_first_last"]
    return f"training loss {first:.3g} → {last:.3g}"


def last_epoch_lines(table: list[dict]) -> list[str]:
    """The same runs scored at the weights training ended with instead of the epoch of lowest
    validation loss (with its validation loss and accuracy at both, from the run's history:
    ``val_best_last``), and the targets under that choice."""
    scored = [r for r in table if r.get("last_epoch")]
    if not scored:
        return []
    lines = ["", "## The last epoch instead of the lowest validation loss", "",
             "The table scores each run's epoch of lowest validation loss (early stopping's "
             "'best'). With one-cycle the last epoch of a run that used all its epochs is the "
             "annealed end of the schedule, and a validation cross-entropy that rises while "
             "accuracy still improves (over-confidence) can make the two differ by many epochs. "
             "The same runs, scored at their last epoch on the test split; Δ against the table, "
             "in points; validation loss and accuracy at the best → last epoch from the run's "
             "history:", "",
             "| dataset | model | loss | best epoch of | val loss | val object acc | pixel acc "
             "| mIoU (Δ) | object acc (Δ) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in scored:
        last, val = r["last_epoch"], r["val_best_last"]
        acc = " → ".join(map(_fmt, val["val_obj_acc"])) if "val_obj_acc" in val else "—"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['loss_ratio']} | "
                     f"{r['best_epoch']} of {r['epochs']} | "
                     f"{' → '.join(f'{v:.3f}' for v in val['val_total'])} | {acc} | "
                     f"{_fmt(last['pix_acc'])} | "
                     f"{_delta(last, r, 'miou')} | {_delta(last, r, 'obj_acc')} |")
    return lines + target_lines([r | r["last_epoch"] for r in scored],
                                "Targets with the last epoch")


def header_lines(rows: list[dict], data: Path, command: str, schedule: str) -> list[str]:
    """Title, command, commits, data and schedule."""
    commits = sorted({r.get("commit", "?") for r in rows})
    summary = data.parent / "summary.json"
    info = json.loads(summary.read_text()) if summary.is_file() else {}
    snr, sim = info.get("snr_measured", {}), info.get("config", {})
    classes = len(set(sim.get("tomogram", {}).get("classes", ())) -
                  set(sim.get("holdout_classes", ())))
    return [
        "# Reproduction of DSM-Net Tables 1-3 (Liu et al. 2018)", "",
        f"Command: `{command}`  ",
        f"Commits the rows were trained at: {', '.join(f'`{c}`' for c in commits)}  ",
        f"Data: `{data}` — simulated by `dsmscale simulate` (seed {sim.get('seed', '?')}), "
        f"{info.get('n_subtomograms', {})} subtomograms, {classes} classes, "
        + ", ".join(f"SNR {name} {value:.3f}" for name, value in snr.items())
        + f"; test split = {sim.get('split_fractions', [0, 0, float('nan')])[2]:.0%} "
        "stratified.  ",
        f"Schedule (every row): {schedule}, {precision_text(rows)}. The paper trained up to 100 "
        "epochs. "
        "Wall time is per row with its torch threads (a machine of 2 cores may run two 1-thread "
        f"rows at once), on the machine that trained it: {machine_text(rows)}.", ""]


def row_label(row: dict) -> str:
    """'B dsrf3d_v2 1:10:1' (and a tried row's change) for a row in running text."""
    return " ".join(filter(None, (row["dataset"], row["model"], row["loss_ratio"],
                                  row.get("variant"))))


def grouped_labels(rows: list[dict], key: str) -> tuple[object, dict[object, list[str]]]:
    """The rows' labels grouped by ``row[key]``, and the value most rows share (None if no
    rows)."""
    groups: dict[object, list[str]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(row_label(r))
    return (max(groups, key=lambda v: len(groups[v])) if groups else None), groups


def precision_text(rows: list[dict]) -> str:
    """The autocast precision most rows trained in, naming the rows that trained in another."""
    common, groups = grouped_labels(rows, "precision")
    others = "; ".join(f"{p}: {', '.join(names)}" for p, names in sorted(groups.items())
                       if p != common)
    return ("autocast precision auto (bf16 where the hardware has it natively, else fp32)"
            + (f": {common}" if common else "") + (f" ({others})" if others else ""))


def machine_text(rows: list[dict]) -> str:
    """The machines the rows trained on, naming the rows of each ("not recorded": rows trained
    before the training history named its machine)."""
    _, groups = grouped_labels([{**r, "machine": r.get("machine", "not recorded")} for r in rows],
                               "machine")
    return "; ".join(f"{machine}: {', '.join(names)}" for machine, names in sorted(
        groups.items(), key=lambda item: item[0] == "not recorded"))


def main_table_lines(table: list[dict]) -> list[str]:
    """One line per row of the common procedure, ours beside the paper's."""
    lines = ["| dataset | model | loss cls:seg:rec | pixel acc (ours / paper) | mIoU (ours / paper) "
             "| object acc (ours / paper) | FSC 0.5 (nm) | converged | epochs | test boxes | "
             "threads | wall (min) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        paper = _paper(r)
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['loss_ratio']} | {_fmt(r['pix_acc'])} / "
            f"{_fmt(paper[0], 1)} | {_fmt(r['miou'])} / {_fmt(paper[1], 1)} | "
            f"{_fmt(r['obj_acc'])} / {_fmt(paper[2], 1)} | "
            f"{_fmt(r.get('fsc_resolution_nm'), 1)} | {_converged(r)} | "
            f"{r['epochs']} | {r['n_test']} | {r['threads']} | {r['wall_s'] / 60:.0f} |")
    earlier = [r for r in table if r.get("earlier_identity")]
    if earlier:
        lines += ["", f"{len(earlier)} rows are records of runs made under an earlier run "
                  "identity (the code changed since; commits "
                  + ", ".join(sorted({f"`{r.get('commit', '?')}`" for r in earlier}))
                  + "), whose run folders are gone: they have no held-out scores or per-box "
                  "results, and the command trains them again: "
                  + ", ".join(row_label(r) for r in earlier) + "."]
    return lines


def test_split_lines(table: list[dict], data: Path) -> list[str]:
    """Warnings when rows were scored on test splits of different sizes (naming the rows outside
    the largest group), or of another size than the dataset folder holds now, from which the
    target sizes and shares below are measured: the folder then held another simulation."""
    common, groups = grouped_labels(table, "n_test")
    lines = []
    if len(groups) > 1:
        lines += ["", "Not every row saw the same test split (the dataset folder held a different "
                  "simulation when they ran): " + "; ".join(
                      f"{n} boxes: " + (f"{len(names)} rows" if n == common else ", ".join(names))
                      for n, names in sorted(groups.items())) + "."]
    now = {ds: len(test_target_voxels(data / ds)[0]) for ds in sorted({r["dataset"] for r in table})}
    other = sorted({r["n_test"] for r in table if r["n_test"] != now[r["dataset"]]})
    if other:
        lines += ["", "The dataset folder now holds another simulation (test boxes: " + ", ".join(
            f"{ds} {n}" for ds, n in now.items()) + ") than the rows scored on "
            + " or ".join(map(str, other)) + " boxes saw: the target sizes and shares below are "
            "measured from the folder."]
    return lines


def _converged(row: dict) -> str:
    """'yes', or 'no' with the evidence: the training loss at the first and last epoch."""
    if row["converged"]:
        return "yes"
    return f"no ({_loss_fall(row)})"


def _paper(row: dict) -> tuple:
    """The paper's (pixel acc, mIoU, object acc) for a row; the paper tables only 1:10:1."""
    if row["loss_ratio"] != "1:10:1":
        return (None, None, None)
    return PAPER.get((row["dataset"], row["model"]), (None, None, None))


@lru_cache(maxsize=4)
def test_target_voxels(dataset: Path) -> tuple[pd.Series, int]:
    """Target voxels of each test box's mask, indexed by class name, and the voxels of a box."""
    table = read_dataset_table(dataset)
    test = table[table["split"] == "test"].sort_values("index")
    masks = open_dataset_array(dataset, "mask")
    boxes = masks.get_orthogonal_selection((test["index"].to_numpy(),))
    voxels = boxes.reshape(len(boxes), -1).sum(1)
    return pd.Series(voxels, index=test["class_name"].to_numpy()), int(boxes[0].size)


def test_target_share(dataset: Path) -> float:
    """The share of the test split's voxels that its segmentation masks mark as target."""
    voxels, box = test_target_voxels(dataset)
    return float(voxels.sum() / (len(voxels) * box))


def share_lines(rows: list[dict], data: Path) -> list[str]:
    """How much of the box the target fills, ours against what the paper's scores imply: with
    pooled voxels, pixel accuracy and mIoU bound the target's share of all voxels between its
    intersection and its union (`metrics.target_share_bounds`)."""
    def bounds(pix, miou):
        try:
            lo, hi = target_share_bounds(pix, miou)
        except ValueError:  # e.g. perfect pixel accuracy bounds nothing
            return "—"
        return f"{lo * 100:.2f}–{hi * 100:.2f}"

    scored = [r for r in rows if r["loss_ratio"] == "1:10:1" and r.get("miou") is not None
              and isinstance(PAPER.get((r["dataset"], r["model"]), (None,))[0], float)]
    if not scored:
        return []
    lines = ["", "## Target share of the box", "",
             "How much of a box the target fills sets what a wrong boundary voxel costs in "
             "IoU (pixel accuracy hardly sees it). Target share of all test voxels (%): "
             "measured from our masks, and bounded from "
             "pixel accuracy and mIoU (between the target's intersection and union of prediction "
             "and truth), for ours and, if the paper pools voxels as we do, for the paper's. "
             "Our masks enclose the molecular volume (1.21 Å³/Da × mass).", "",
             "| dataset | model | ours measured | ours from scores | paper's from scores |",
             "|---|---|---|---|---|"]
    measured = {ds: test_target_share(data / ds) for ds in sorted({r["dataset"] for r in scored})}
    for r in scored:
        paper = PAPER[(r["dataset"], r["model"])]
        lines.append(f"| {r['dataset']} | {r['model']} | {measured[r['dataset']] * 100:.2f} | "
                     f"{bounds(r['pix_acc'], r['miou'])} | {bounds(paper[0] / 100, paper[1] / 100)} |")
    return lines


def heldout_lines(table: list[dict]) -> list[str]:
    """Each row's scores on the test split beside those on a held-out tomogram of the same
    settings (`dsmscale.experiments.reproduction.heldout_scores`)."""
    scored = [r for r in table if r.get("heldout")]
    if not scored:
        return []
    lines = ["", "## On held-out tomograms", "",
             "The paper's test split is boxes of the tomogram the training boxes come from. Held "
             "out: every box of the same settings simulated with another seed (`"
             + "`, `".join(sorted({r["heldout"]["data"] for r in scored})) + "`), a tomogram no "
             "row trained on.", "",
             "| dataset | model | loss | test boxes | held-out boxes | mIoU test / held-out | "
             "object acc test / held-out |", "|---|---|---|---|---|---|---|"]
    for r in scored:
        held = r["heldout"]
        lines.append(f"| {r['dataset']} | {r['model']} | {r['loss_ratio']} | {r['n_test']} | "
                     f"{held['n']} | {_fmt(r['miou'])} / {_fmt(held['miou'])} | "
                     f"{_fmt(r['obj_acc'])} / {_fmt(held['obj_acc'])} |")
    return lines


def claim_lines(claims: list[dict]) -> list[str]:
    """The paper's claims, each tested on the same boxes: holds, does not hold or undecided at
    p < 0.05; then the claims of `CLAIMS` not tested yet."""
    score = {"obj_acc": "object acc", "miou": "mIoU"}
    lines = ["", "## The paper's claims, tested"]
    if claims:
        lines += ["",
                  "Each claim of the paper that a multi-task model beats (or not) a single-task "
                  "one, tested on the same boxes (`dsmscale.statistics`): object accuracy by "
                  "McNemar's exact test, mIoU by a paired bootstrap over boxes (BCa, 2,000 "
                  "resamples, 95 % interval). Holds / does not hold: significant at p < 0.05 in "
                  "the paper's direction / the other; undecided: not significant. Difference = "
                  "a − b in points, with its 95 % interval (for object accuracy a paired "
                  "bootstrap too) beside the paper's a − b: 'outside' when the interval excludes "
                  "the paper's difference.", "",
                  "| dataset | claim | score | test set (boxes) | a − b | 95 % interval | p | "
                  "paper's a − b | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for c in claims:
        relation = ">" if c["claim_a_better"] else "≤"
        low, high = c["interval"]
        interval = f"[{low * 100:+.2f}, {high * 100:+.2f}]"
        p = (f"{c['p_value']:.3g} ({c['only_a']} vs {c['only_b']} boxes right by one only)"
             if c["metric"] == "obj_acc" else "—")
        lines.append(f"| {c['dataset']} | {c['a']} {relation} {c['b']} | {score[c['metric']]} | "
                     f"{c['test_set']} ({c['n']}) | {c['difference'] * 100:+.2f} | {interval} | "
                     f"{p} | {_paper_difference(c, low, high)} | **{c['verdict']}** |")
    tested = {(c["dataset"], c["a"], c["b"], c["metric"]) for c in claims}
    untested = [f"{d} {a} {'>' if a_better else '≤'} {b} ({score[metric]})"
                for d, a, b, metric, a_better in CLAIMS if (d, a, b, metric) not in tested]
    if untested:
        lines += ["", f"Not tested yet, {len(untested)} of the paper's {len(CLAIMS)} claims (one "
                      "of the two rows has no per-box results under the current code; the "
                      "command trains it): " + ", ".join(untested) + "."]
    return lines


def paper_difference(claim: dict) -> float:
    """The paper's a − b of a claim, in points."""
    column = {"miou": 1, "obj_acc": 2}[claim["metric"]]
    theirs = [PAPER[(claim["dataset"], m)][column] for m in (claim["a"], claim["b"])]
    return theirs[0] - theirs[1]


def _paper_difference(claim: dict, low: float, high: float) -> str:
    """The paper's a − b of a claim in points, and whether our interval (fractions) excludes
    it."""
    difference = paper_difference(claim)
    return f"{difference:+.2f} ({'inside' if low * 100 <= difference <= high * 100 else 'outside'})"


#: The colour of each verdict in `claims_figure`.
VERDICT_COLOURS = {"holds": "tab:green", "does not hold": "tab:red", "undecided": "0.45"}


def claims_figure(claims: list[dict], path: Path) -> bool:
    """A forest plot of the tested claims: per claim and test set, our a − b (points) with its
    95 % interval, coloured by verdict, and the paper's a − b as a cross; False (nothing
    written) when no claim is tested yet."""
    if not claims:
        return False
    score = {"obj_acc": "object acc", "miou": "mIoU"}
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(claims) + 1.4))
    rows = np.arange(len(claims))[::-1]  # the table's order, top down
    for row, c in zip(rows, claims, strict=True):
        colour = VERDICT_COLOURS[c["verdict"]]
        ax.plot([v * 100 for v in c["interval"]], [row, row], color=colour, lw=2.5)
        ax.plot(c["difference"] * 100, row, "o", color=colour)
        ax.plot(paper_difference(c), row, "x", color="black", ms=7)
    ax.axvline(0, ls="--", lw=1, color="0.6")
    ax.set_yticks(rows, [f"{c['dataset']} {c['a']} − {c['b']}, {score[c['metric']]}, "
                         f"{c['test_set']} ({c['n']:,})" for c in claims])
    ax.set_xlabel("a − b (points): ours with its 95 % interval; × the paper's")
    verdicts = dict.fromkeys(c["verdict"] for c in claims)
    ax.legend(handles=[plt.Line2D([], [], color=VERDICT_COLOURS[v], marker="o", lw=2.5, label=v)
                       for v in verdicts]
              + [plt.Line2D([], [], color="black", marker="x", ls="", label="paper")],
              loc="lower left", bbox_to_anchor=(0, 1), ncols=4, frameon=False, fontsize="small")
    save_figure(fig, path, dpi=120)
    return True


def seed_lines(rows: list[dict]) -> list[str]:
    """Mean ± standard deviation over training seeds of each row retrained with other seeds
    (seed 0 is the common procedure's row), on the test split and held out, with the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r.get("variant") or r.get("seed"):
            groups.setdefault((r["dataset"], r["model"], r["loss_ratio"]), []).append(r)
    groups = {k: rs for k, rs in groups.items() if len(rs) > 1}
    if not groups:
        return []

    def spread(rs: list[dict], key: str, held: bool = False) -> str:
        values = [(r.get("heldout") or {}).get(key) if held else r.get(key) for r in rs]
        values = [v * 100 for v in values if v is not None]
        if not values:
            return "—"
        sd = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
        return f"{np.mean(values):.2f}{sd} ({len(values)})"

    lines = ["", "## Training seeds", "",
             "Rows retrained with other seeds (`python jobs/reproduce_paper.py ... --seeds`): mean "
             "± standard deviation over seeds (in brackets: how many), on the test split and "
             "held out.", "",
             "| dataset | model | loss | seeds | mIoU test | mIoU held-out | object acc test | "
             "object acc held-out |", "|---|---|---|---|---|---|---|---|"]
    for (dataset, model, ratio), rs in groups.items():
        seeds = ", ".join(str(r.get("seed", 0)) for r in rs)
        lines.append(f"| {dataset} | {model} | {ratio} | {seeds} | {spread(rs, 'miou')} | "
                     f"{spread(rs, 'miou', True)} | {spread(rs, 'obj_acc')} | "
                     f"{spread(rs, 'obj_acc', True)} |")
    return lines


def tried_lines(rows: list[dict]) -> list[str]:
    """The tried rows beside the same row under the common procedure (change in points)."""
    tried = [r for r in rows if r.get("variant") and not r.get("seed")]
    if not tried:
        return []
    common = {(r["dataset"], r["model"], r["loss_ratio"]): r for r in rows if not r.get("variant")}
    lines = ["", "## Tried: one change to the common procedure", "",
             "Each changes one thing of the common schedule (`python jobs/reproduce_paper.py "
             "... --tried`); Δ is against the same row above, in points.", "",
             "| dataset | model | loss | change | pixel acc | mIoU (Δ) | object acc (Δ) | "
             "converged | epochs | threads | wall (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in tried:
        base = common.get((r["dataset"], r["model"], r["loss_ratio"]), {})
        lines.append(f"| {r['dataset']} | {r['model']} | {r['loss_ratio']} | {r['variant']} | "
                     f"{_fmt(r['pix_acc'])} | {_delta(r, base, 'miou')} | "
                     f"{_delta(r, base, 'obj_acc')} | {_converged(r)} | {r['epochs']} | "
                     f"{r['threads']} | "
                     f"{r['wall_s'] / 60:.0f} |")
    return lines


def _delta(row: dict, base: dict, key: str) -> str:
    """``row[key]`` in percent, with its change from ``base[key]`` in points when both exist."""
    if row.get(key) is None or base.get(key) is None:
        return _fmt(row.get(key))
    return f"{_fmt(row[key])} ({(row[key] - base[key]) * 100:+.2f})"


def _write(path: Path, text: str) -> None:
    """Write whole or not at all: two processes may rebuild the tables at once."""
    write_file_atomic(path, lambda tmp: tmp.write_text(text))


def per_class_lines(rows: list[dict], data: Path) -> list[str]:
    """Per-class F1 of the DSM-Net rows at 1:10:1 (common and tried) beside each class's mean
    target size in the test masks, smallest first, with the rank correlation of the two."""
    from scipy.stats import spearmanr

    f1, dataset_of = {}, {}
    for r in rows:
        if (r["model"] == "dsmnet" and r["loss_ratio"] == "1:10:1" and "f1_per_class" in r
                and not r.get("seed")):
            label = f"F1 {r['dataset']}{' ' + r['variant'] if r.get('variant') else ''}"
            f1[label] = pd.Series(r["f1_per_class"])
            dataset_of[label] = r["dataset"]
    if not f1:
        return []
    sizes = pd.DataFrame({ds: test_target_voxels(data / ds)[0].groupby(level=0).mean()
                          for ds in dict.fromkeys(dataset_of.values())})
    sizes = sizes.sort_values(sizes.columns[0])
    f1 = pd.DataFrame(f1).reindex(sizes.index)
    rho = {c: spearmanr(sizes[dataset_of[c]], f1[c]).statistic for c in f1}
    if sizes.nunique(axis=1).eq(1).all():  # the datasets share their masks: one size column
        sizes = sizes.iloc[:, :1].set_axis(["target voxels"], axis=1)
    else:
        sizes = sizes.add_prefix("target voxels ")
    box = test_target_voxels(data / next(iter(dataset_of.values())))[1]  # cached above
    lines = ["", "## Where DSM-Net's accuracy goes: per-class F1 against target size", "",
             f"Test split; target size = mean voxels of the class's masks (of {box:,} per box). "
             "Spearman ρ of size and F1: " + ", ".join(
                 f"{c.removeprefix('F1 ')} {v:.2f}" for c, v in rho.items()) + ".", "",
             "| class | " + " | ".join([*sizes, *f1]) + " |",
             "|---|" + "---|" * (len(sizes.columns) + len(f1.columns))]
    for name in sizes.index:
        lines.append(f"| {name} | " + " | ".join(
            [f"{v:.0f}" for v in sizes.loc[name]] + [f"{v:.2f}" for v in f1.loc[name]]) + " |")
    return lines


def comparison_figure(table: list[dict], path: Path) -> bool:
    """Bars of object accuracy and mIoU, ours beside the paper's, for the rows the paper has a
    figure for; False (nothing written) when there is none yet."""
    panels = [(i, key, name) for i, key, name in ((2, "obj_acc", "object accuracy (%)"),
                                                  (1, "miou", "mIoU (%)"))
              if any(isinstance(_paper(r)[i], float) and r.get(key) is not None for r in table)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (i, key, name) in zip(axes[0], panels, strict=True):
        shown = [r for r in table if isinstance(_paper(r)[i], float) and r.get(key) is not None]
        x = np.arange(len(shown))
        ax.bar(x - 0.2, [r[key] * 100 for r in shown], 0.4, label="ours")
        ax.bar(x + 0.2, [_paper(r)[i] for r in shown], 0.4, label="paper")
        ax.set_xticks(x, [f"{r['dataset']} {r['model']}" for r in shown], rotation=30, ha="right")
        ax.set_ylabel(name)
        ax.set_ylim(0, 112)
        ax.legend(loc="upper right", ncols=2)
    save_figure(fig, path, dpi=120)
    return True

