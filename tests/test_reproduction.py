"""The paper reproduction: its tables (`dsmscale.report.reproduction`) from rows made up here and
the tiny dataset, and its row bookkeeping (`dsmscale.experiments.reproduction`)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from dsmscale.experiments import reproduction
from dsmscale.report.reproduction import precision_text, write_results


def _row(model, obj_acc=None, miou=None, pix_acc=None, variant=None, run_hash="r0",
         loss_ratio="1:10:1"):
    return {"dataset": "A", "model": model, "loss_ratio": loss_ratio, "pix_acc": pix_acc,
            "miou": miou, "obj_acc": obj_acc, "fsc_resolution_nm": None, "converged": True,
            "train_loss_first_last": [3.0, 1.0],
            "epochs": 2, "best_epoch": 1, "wall_s": 60.0, "precision": "bf16", "threads": 1,
            "commit": "abc", "run_hash": run_hash, "variant": variant}


@pytest.fixture(scope="module")
def report(tiny_dataset, tmp_path_factory):
    """results/ written from made-up rows: the rows, the markdown, the folder and the test
    split's size."""
    last = {"pix_acc": 0.998, "miou": 0.88, "obj_acc": 0.95, "fsc_resolution_nm": None}
    table = pd.read_parquet(tiny_dataset / "particles.parquet")
    classes = table["class_name"].unique()
    f1 = {name: {c: f + 0.05 * i for i, c in enumerate(classes)}
          for name, f in (("net", 0.5), ("aug", 0.7))}
    val = {"val_total": [1.2, 1.4], "val_obj_acc": [0.5, 0.6]}
    rows = [_row("dsmnet", 0.90, 0.86, 0.997, run_hash="net")
            | {"last_epoch": last, "val_best_last": val, "f1_per_class": f1["net"]},
            _row("cls", 0.80) | {"converged": False, "train_loss_first_last": [3.09, 3.01]},
            _row("seg", miou=0.87, pix_acc=0.997),
            _row("dsmnet", 0.91, 0.80, 0.996, loss_ratio="1:1:1"),
            _row("dsmnet", 0.70, 0.84, 0.997, loss_ratio="1:100:1"),
            _row("dsmnet", 0.72, 0.83, 0.997, loss_ratio="1:2:1"),
            _row("dsrf3d_v2", 0.05) | {"converged": False, "train_loss_first_last": [3.1, 3.0],
                                       "precision": "fp32"},
            _row("dsmnet", 0.93, 0.85, 0.997, variant="augment=True", run_hash="aug")
            | {"f1_per_class": f1["aug"]},
            _row("dsmnet", 0.86, 0.84, 0.997, variant="seed=1", run_hash="s1")
            | {"seed": 1, "f1_per_class": f1["aug"], "heldout": {"miou": 0.80, "obj_acc": 0.70,
                                                                  "n": 900, "data": "held"}},
            _row("dsmnet", 0.88, 0.85, 0.997, variant="seed=2", run_hash="s2") | {"seed": 2}]
    rows[0]["heldout"] = {"miou": 0.82, "obj_acc": 0.74, "n": 900, "data": "held"}
    rows[1]["machine"] = rows[2]["machine"] = "NVIDIA H100 80GB HBM3"
    n_test = int((table["split"] == "test").sum())
    for r in rows:  # the dataset folder's test split, but DSRF3D-v2 saw another simulation
        r["n_test"] = n_test + 2 * (r["model"] == "dsrf3d_v2")
    results = tmp_path_factory.mktemp("reproduction") / "results"
    training = {"dataset": "B", "model": "dsrf3d_v2", "loss_ratio": "1:10:1", "epochs": 5,
                "max_epochs": 24, "run_hash": "d18a", "train_loss_first_last": [3.2521, 3.0922],
                "val_obj_acc": 0.0452, "precision": "fp32", "threads": 2}
    waiting = {"dataset": "B", "model": "cls", "loss_ratio": "1:10:1", "epochs": 0}
    claims = [{"dataset": "A", "a": "dsmnet", "b": "cls", "metric": "obj_acc",
               "claim_a_better": True, "test_set": "held-out", "n": 900, "p_value": 0.0123,
               "only_a": 40, "only_b": 20, "difference": 20 / 900, "interval": [0.005, 0.04],
               "verdict": "holds"},
              {"dataset": "A", "a": "dsmnet", "b": "seg", "metric": "miou", "claim_a_better": True,
               "test_set": "test split", "n": 352, "interval": [-0.021, 0.004],
               "difference": -0.01, "verdict": "undecided"}]
    write_results(rows, tiny_dataset.parent, "cmd", results,
                  pending=[training] + [waiting] * 8, schedule="a schedule", claims=claims)
    return {"rows": rows, "md": (results / "reproduction.md").read_text(), "results": results,
            "n_test": n_test, "table": table, "claims": claims}


def test_targets_say_met_missed_or_pending(report):
    md = report["md"]
    assert "- A: DSM-Net object accuracy ≥ 94 %: 90.00 vs 94.00 — missed by 4.00 points" in md
    assert "- A: DSM-Net accuracy above the Cls subnet's: 90.00 vs 80.00 — met" in md
    assert "- A: DSM-Net mIoU above the Seg subnet's: 86.00 vs 87.00 — missed by 1.00 points" in md
    assert "- B: DSM-Net object accuracy ≥ 54 %: pending (row not run yet)" in md


def test_unfinished_rows_say_how_far_they_trained(report):
    md = report["md"]
    assert "9 of 16 rows have not finished" in md
    assert ("- B dsrf3d_v2 1:10:1: 5 of at most 24 epochs trained (run `d18a`, fp32, 2 threads); "
            "training loss 3.252 → 3.092, validation object accuracy 4.52 % at the last epoch") in md
    assert "- B cls 1:10:1: not started" in md


def test_schedule_names_rows_of_another_precision(report):
    assert precision_text([]).startswith("autocast precision auto")  # no row finished yet
    assert ("a schedule, autocast precision auto (bf16 where the hardware has it natively, else "
            "fp32): bf16 (fp32: A dsrf3d_v2 1:10:1).") in report["md"]
    assert ("on the machine that trained it: NVIDIA H100 80GB HBM3: A cls 1:10:1, A seg 1:10:1; "
            "not recorded: A dsmnet 1:10:1, A dsmnet 1:1:1,") in report["md"]


def test_convergence_gives_the_loss_as_evidence(report):
    md, n_test = report["md"], report["n_test"]
    assert ("- A: did not converge — training loss 3.1 → 3 over 2 epochs; test object accuracy "
            "5.00 %.") in md
    assert f"| no (training loss 3.09 → 3.01) | 2 | {n_test} |" in md


def test_rows_scored_on_another_simulation_are_named(report):
    md, n_test = report["md"], report["n_test"]
    assert ("(the dataset folder held a different simulation when they ran): "
            f"{n_test} boxes: 6 rows; {n_test + 2} boxes: A dsrf3d_v2 1:10:1.") in md
    assert (f"The dataset folder now holds another simulation (test boxes: A {n_test}) than the "
            f"rows scored on {n_test + 2} boxes saw") in md


def test_loss_ratios_in_order_with_the_best_named(report):
    md = report["md"]
    ratio_rows = [line for line in md.splitlines() if line.startswith("| A | 1:")]
    assert [line.split(" | ")[1] for line in ratio_rows] == ["1:1:1", "1:2:1", "1:10:1", "1:100:1"]
    assert "- A: best mIoU at 1:10:1, best object accuracy at 1:1:1." in md


def test_last_epoch_and_tried_rows_give_their_change(report):
    md = report["md"]
    assert ("| A | dsmnet | 1:10:1 | 1 of 2 | 1.200 → 1.400 | 50.00 → 60.00 | 99.80 | "
            "88.00 (+2.00) | 95.00 (+5.00) |") in md
    assert "## Targets with the last epoch" in md
    assert "- A: DSM-Net object accuracy ≥ 94 %: 95.00 vs 94.00 — met" in md
    assert ("| A | dsmnet | 1:10:1 | augment=True | 99.70 | 85.00 (-1.00) | 93.00 (+3.00) | yes "
            "| 2 |") in md


def test_target_share_and_per_class_sizes_are_measured_from_the_masks(report, tiny_dataset):
    md, table = report["md"], report["table"]
    test = np.sort(table.loc[table["split"] == "test", "index"].to_numpy())
    share = zarr.open_array(str(tiny_dataset / "mask.zarr"))[:][test].mean()
    assert f"| A | dsmnet | {share * 100:.2f} |" in md
    assert "| class | target voxels | F1 A | F1 A augment=True |" in md  # one dataset: one size
    classes = set(table["class_name"])
    sizes = [float(line.split("|")[2]) for line in md.splitlines()
             if line.startswith("| ") and line.split("|")[1].strip() in classes]
    tested = table.loc[table["split"] == "test", "class_name"].nunique()
    assert len(sizes) == tested and sizes == sorted(sizes)  # smallest target first


def test_json_holds_the_rows_and_the_figure_is_drawn(report):
    assert (report["results"] / "reproduction.png").is_file()
    assert (report["results"] / "reproduction_claims.png").is_file()
    assert "(reproduction_claims.png)" in report["md"].split("## Training seeds")[0]
    assert json.loads((report["results"] / "reproduction.json").read_text()) == {
        "rows": report["rows"], "claims": report["claims"]}


def test_heldout_claims_and_seeds_are_tabled(report):
    md, n_test = report["md"], report["n_test"]
    assert f"| A | dsmnet | 1:10:1 | {n_test} | 900 | 86.00 / 82.00 | 90.00 / 74.00 |" in md
    assert ("| A | dsmnet > cls | object acc | held-out (900) | +2.22 | [+0.50, +4.00] | 0.0123 "
            "(40 vs 20 boxes right by one only) | +17.51 (outside) | **holds** |") in md
    assert ("| A | dsmnet > seg | mIoU | test split (352) | -1.00 | [-2.10, +0.40] | — | "
            "+1.93 (outside) | **undecided** |") in md
    # seeds 0, 1, 2 of DSM-Net: accuracy 90, 86, 88 → 88 ± 2; held out only seeds 0 and 1
    assert ("| A | dsmnet | 1:10:1 | 0, 1, 2 | 85.00 ± 1.00 (3) | 81.00 ± 1.41 (2) | "
            "88.00 ± 2.00 (3) | 72.00 ± 2.83 (2) |") in md
    assert "seed=1 |" not in md.split("## Tried")[1]  # seeds are not tried changes
    untested = md.split("Not tested yet, ")[1].split("\n")[0]
    assert untested.startswith("8 of the paper's 10 claims")  # A dsmnet > cls, > seg are
    assert "A cls_seg > seg (mIoU), A cls_seg > ssn3d_ed (mIoU), A dsmnet > ssn3d_ed" in untested
    assert "A dsmnet > cls " not in untested and "A dsmnet > seg " not in untested


def test_the_papers_claims_pair_multi_with_single_task_models():
    from dsmscale.report.reproduction import CLAIMS
    assert ("A", "dsmnet", "cls", "obj_acc", True) in CLAIMS
    assert ("B", "dsmnet", "seg", "miou", True) in CLAIMS
    assert ("A", "cls_rec", "cls", "obj_acc", True) in CLAIMS
    assert not any(c[1] == "dsrf3d_v2" or c[2] == "dsmnet" for c in CLAIMS)
    assert all(c[3] == "obj_acc" or c[2] in ("seg", "ssn3d_ed") for c in CLAIMS)


def _per_box(path, predicted, counts, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, index=np.arange(len(labels)), label=labels, predicted=predicted,
                 counts=counts)


def test_claims_are_tested_on_the_same_boxes_of_the_rows_run_folders(tmp_path):
    from dsmscale.statistics import mcnemar, paired_bootstrap_accuracy
    data, workdir, weights = tmp_path / "data", tmp_path / "work", (1.0, 10.0, 1.0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    labels[:10] = -1  # class unknown: left out of accuracy
    counts = rng.integers(1, 100, (400, 2, 3))
    a = np.where(rng.random(400) < 0.9, labels, (labels + 1) % 5)  # a: ~90 %, b: ~70 %
    b = np.where(rng.random(400) < 0.7, labels, (labels + 1) % 5)
    folder = {m: workdir / "runs" / reproduction.row_config(data, workdir, "A", m, weights, None)
              .run_hash() for m in ("dsmnet", "cls")}
    _per_box(folder["dsmnet"] / "eval_heldout" / "per_box.npz", a, counts, labels)
    _per_box(folder["cls"] / "eval_heldout" / "per_box.npz", b, counts, labels)
    tests = reproduction.claim_tests(data, workdir, None, tmp_path / "results", {})
    assert [(t["a"], t["b"], t["test_set"]) for t in tests] == [("dsmnet", "cls", "held-out")]
    expected = mcnemar(a[10:] == labels[10:], b[10:] == labels[10:])
    assert tests[0]["p_value"] == expected.p_value and tests[0]["n"] == 390
    size = paired_bootstrap_accuracy(a[10:] == labels[10:], b[10:] == labels[10:])
    assert tests[0]["interval"] == [size.low, size.high] and size.low > 0
    assert tests[0]["verdict"] == "holds" and tests[0]["difference"] > 0.1
    same = reproduction.paired_test(folder["dsmnet"] / "eval_heldout" / "per_box.npz",
                                    folder["cls"] / "eval_heldout" / "per_box.npz", "miou", True)
    assert same["difference"] == 0 and same["verdict"] == "undecided"  # identical counts
    other = tmp_path / "other.npz"
    with open(other, "wb") as f:
        np.savez(f, index=np.arange(1, 401), label=labels, predicted=b, counts=counts)
    with pytest.raises(ValueError, match="different boxes"):
        reproduction.paired_test(folder["dsmnet"] / "eval_heldout" / "per_box.npz", other,
                                 "obj_acc", True)


def test_claims_outlive_the_run_folders(tmp_path):
    import shutil

    data, workdir, results = tmp_path / "data", tmp_path / "work", tmp_path / "results"
    weights = (1.0, 10.0, 1.0)
    rng = np.random.default_rng(1)
    labels, counts = rng.integers(0, 5, 300), rng.integers(1, 100, (300, 2, 3))
    plan = [("A", m, weights, None, None) for m in ("dsmnet", "cls", "seg")]
    configs = {row[1]: reproduction.row_config(data, workdir, *row) for row in plan}
    runs = {m: c.run_hash() for m, c in configs.items()}
    for model, right in (("dsmnet", 0.9), ("cls", 0.6)):
        predicted = np.where(rng.random(300) < right, labels, (labels + 1) % 5)
        _per_box(Path(configs[model].output) / "eval_heldout" / "per_box.npz", predicted,
                 counts, labels)
    reproduction.keep_per_box(plan, data, workdir, results)
    kept = sorted(p.name for p in (results / reproduction.PER_BOX).iterdir())
    assert kept == sorted(f"{runs[m]}-eval_heldout.npz" for m in ("dsmnet", "cls"))
    first = reproduction.claim_tests(data, workdir, None, results, {})
    shutil.rmtree(workdir)  # a new machine: the run folders are gone, results/ is not
    again = reproduction.claim_tests(data, workdir, None, results, {})
    assert again == first and [(t["a"], t["b"], t["runs"]) for t in again] == [
        ("dsmnet", "cls", [runs["dsmnet"], runs["cls"]])]
    shutil.rmtree(results / reproduction.PER_BOX)  # neither: the recorded test of the same runs
    recorded = {reproduction.claim_key(t): t for t in first}
    assert reproduction.claim_tests(data, workdir, None, results, recorded) == first
    stale = {k: t | {"runs": ["older", runs["cls"]]} for k, t in recorded.items()}
    assert reproduction.claim_tests(data, workdir, None, results, stale) == []
    (results / "reproduction.json").write_text(json.dumps({"rows": [], "claims": first}))
    assert reproduction.recorded_claims(results) == recorded
    assert reproduction.recorded_claims(tmp_path / "nowhere") == {}


def test_finished_rows_read_run_folders_and_keep_recorded_rows_whose_folder_is_gone(tmp_path):
    data, workdir, weights = tmp_path / "data", tmp_path / "work", (1.0, 10.0, 1.0)
    plan = [("A", "dsmnet", weights, 1, None), ("A", "dsmnet", weights, 1, {"augment": True}),
            ("B", "cls", weights, 1, None)]
    hashes = [reproduction.row_config(data, workdir, *row).run_hash() for row in plan]
    assert len(set(hashes)) == 3
    results = tmp_path / "results"
    results.mkdir()
    records = [{"run_hash": h, "source": "record", "dataset": "A", "model": "dsmnet",
                "loss_ratio": "1:10:1", "variant": v} for h, v in
               zip(hashes[:2], (None, "augment=True"), strict=True)]
    (results / "reproduction.json").write_text(json.dumps({"rows": records, "claims": []}))
    recorded = reproduction.recorded_rows(results)
    assert set(recorded) == set(hashes[:2])
    assert reproduction.recorded_rows(tmp_path / "nowhere") == {}
    on_disk = workdir / "runs" / hashes[1]  # the tried row's folder is on disk: it wins
    (on_disk / "eval").mkdir(parents=True)
    (on_disk / "result.json").write_text(json.dumps(
        {"run_hash": hashes[1], "best_epoch": 1, "variant": "augment=True"}))
    (on_disk / "history.json").write_text(json.dumps(
        [{"val_total": 1.0, "val_obj_acc": 0.5, "threads": 2},
         {"val_total": 0.9, "val_obj_acc": 0.6, "threads": 2}]))
    (on_disk / "eval" / "metrics.json").write_text(json.dumps({"f1_per_class": {"1BXN": 0.5}}))
    training = workdir / "runs" / hashes[2]  # the B row has trained one epoch
    training.mkdir(parents=True)
    (training / "history.json").write_text(json.dumps(
        [{"train_total": 3.2, "val_obj_acc": 0.05, "precision": "fp32", "threads": 1}]))
    assert reproduction.pending_rows(plan, data, workdir, recorded) == [
        {"dataset": "B", "model": "cls", "loss_ratio": "1:10:1", "epochs": 1, "max_epochs": 24,
         "run_hash": hashes[2], "train_loss_first_last": [3.2, 3.2], "val_obj_acc": 0.05,
         "precision": "fp32", "threads": 1, "earlier": False}]
    (training / "history.json").unlink()
    assert reproduction.pending_rows(plan, data, workdir, {})[1:] == [  # not started: no history
        {"dataset": "B", "model": "cls", "loss_ratio": "1:10:1", "epochs": 0, "max_epochs": 24,
         "run_hash": hashes[2], "earlier": False}]
    rows = reproduction.finished_rows(plan, data, workdir, recorded)
    assert rows == [records[0],  # the B row is neither: left out
                    {"run_hash": hashes[1], "best_epoch": 1, "variant": "augment=True",
                     "threads": 2, "val_best_last": {"val_total": [1.0, 0.9],
                                                     "val_obj_acc": [0.5, 0.6]},
                     "f1_per_class": {"1BXN": 0.5}}]


def test_a_row_recorded_under_an_earlier_identity_is_shown_until_trained_again(tmp_path):
    from dsmscale.report.reproduction import main_table_lines, pending_lines

    data, workdir, weights = tmp_path / "data", tmp_path / "work", (1.0, 10.0, 1.0)
    plan = [("A", "dsmnet", weights, 1, None), ("A", "dsmnet", weights, 1, {"augment": True}),
            ("A", "cls", weights, 1, None)]
    earlier = _row("dsmnet", 0.84, 0.86, run_hash="old") | {"commit": "05612a6", "n_test": 352}
    del earlier["variant"]  # records made before rows had one
    recorded = {"old": earlier}
    assert reproduction.row_config(data, workdir, *plan[0]).run_hash() != "old"
    rows = reproduction.finished_rows(plan, data, workdir, recorded)
    assert rows == [earlier | {"earlier_identity": True}]  # not the tried row's, not Cls's
    pending = reproduction.pending_rows(plan[::2], data, workdir, recorded)
    assert [(p["model"], p["earlier"]) for p in pending] == [("dsmnet", True), ("cls", False)]
    table = "\n".join(main_table_lines(rows))
    assert ("1 rows are records of runs made under an earlier run identity (the code changed "
            "since; commits `05612a6`)") in table
    assert table.endswith("the command trains them again: A dsmnet 1:10:1.")
    listed = "\n".join(pending_lines(pending, len(rows) + 1))
    assert "2 of 2 rows have not finished under the current code" in listed
    assert "- A dsmnet 1:10:1 (the table holds its earlier run): not started" in listed
    assert "- A cls 1:10:1: not started" in listed
    trained = workdir / "runs" / reproduction.row_config(data, workdir, *plan[0]).run_hash()
    trained.mkdir(parents=True)  # trained again: its run folder replaces the record
    (trained / "result.json").write_text(json.dumps({"run_hash": "new", "best_epoch": 1}))
    (trained / "history.json").write_text(json.dumps([{"val_total": 1.0, "threads": 1}]))
    for scores in ("eval", "eval_last"):
        (trained / scores).mkdir(exist_ok=True)
        (trained / scores / "metrics.json").write_text("{}")
    assert [r["run_hash"] for r in reproduction.finished_rows(plan, data, workdir, recorded)] == [
        "new"]
