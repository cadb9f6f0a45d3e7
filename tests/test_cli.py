"""The CLI happy path and the demo job, end to end on real files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

import dsmscale
from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint
from dsmscale.cli import COMMANDS, main
from dsmscale.geometry import box_starts, boxes_inside
from dsmscale.io.job import JobFolder
from dsmscale.io.omezarr import open_tomogram
from dsmscale.io.particles import read_star
from dsmscale.io.subtomograms import read_subtomograms
from dsmscale.metrics import match_points
from dsmscale.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    result = subprocess.run([sys.executable, "-m", "dsmscale.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_convert_pick_extract(tmp_path, blob_store):
    store = tmp_path / "t.zarr"
    run("convert", blob_store["mrc"], "-o", store, "--chunk", "32", "--zarr-format", "2")
    run("pick", store, "-o", tmp_path / "picks.star", "--polarity", "bright", "--sigma-nm", "2",
        "--min-distance-nm", "8", "--threshold", "5")
    run("extract", store, tmp_path / "picks.star", "-o", tmp_path / "sub", "--box", "16")
    tomogram = open_tomogram(store)
    assert tomogram.ngff_version == "0.4" and tomogram.array.metadata.zarr_format == 2
    picks = read_star(tmp_path / "picks.star").df[["z", "y", "x"]].to_numpy()
    assert match_points(picks, blob_store["centres"], 2.0)["recall"] >= 0.95
    boxes, meta = read_subtomograms(tmp_path / "sub")
    assert boxes.shape[1:] == (16, 16, 16) and len(meta) == len(picks)
    starts = box_starts(meta[["z", "y", "x"]].to_numpy(float), 16)
    inside = np.flatnonzero(boxes_inside(starts, 16, blob_store["volume"].shape))
    assert len(inside) > 10
    for i in inside:  # each box is the tomogram's voxels at its start
        z, y, x = starts[i]
        np.testing.assert_array_equal(boxes[i], blob_store["volume"][z:z + 16, y:y + 16, x:x + 16])


@pytest.mark.ray
def test_demo_job(tmp_path, tiny_checkpoint):
    """The demo's code path with a tiny model (make demo uses the shipped one)."""
    result = subprocess.run([sys.executable, str(REPO / "jobs" / "demo.py"), "--output",
                             str(tmp_path / "demo"), "--model", str(tiny_checkpoint)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["classified_inside"] + summary["classified_padded"] == summary["true_particles"]
    assert summary["classified_inside"] > 50 and summary["classified_padded"] > 0
    # the accuracies again, each result matched to the simulated molecule at its position
    results = JobFolder(tmp_path / "demo" / "job").read_particles()
    truth = read_star(tmp_path / "demo" / "demo.star").df
    distance, nearest = cKDTree(truth[["z", "y", "x"]].to_numpy()).query(
        results[["z", "y", "x"]].to_numpy())
    assert distance.max() < 1e-6
    correct = results["class_name"].to_numpy() == truth["class_name"].to_numpy()[nearest]
    padded = results["padded"].to_numpy()
    assert summary["class_accuracy_inside"] == pytest.approx(correct[~padded].mean())
    assert summary["class_accuracy_padded"] == pytest.approx(correct[padded].mean())
    # realistic data (crowding, wedge, CTF, SNR 0.06): a DoG picker finds many particles
    assert summary["pick_recall"] >= 0.4 and summary["pick_precision"] >= 0.4
    assert (tmp_path / "demo" / "report.md").is_file()
    assert (tmp_path / "demo" / "job" / "maps" / "demo_labels.zarr").is_dir()


def test_train_distill_and_evaluate_commands_pass_their_flags(tmp_path, tiny_dataset,
                                                              tiny_checkpoint, capsys):
    small = tmp_path / "small.yaml"
    small.write_text("limit_train: 16\nlimit_val: 8\nbatch_size: 8\nmax_epochs: 1\n")
    assert main(["train", "--config", str(small), "--dataset", str(tiny_dataset), "-o",
                 str(tmp_path / "run"), "--model", "cls_seg", "--augment", "--micro-batch", "4",
                 "--threads", "2", "--monitor", "val_score", "--no-batch-norm"]) == 0
    trained = TrainConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert (trained.model, trained.augment, trained.micro_batch, trained.threads,
            trained.limit_train, trained.monitor, trained.batch_norm) == (
        "cls_seg", True, 4, 2, 16, "val_score", False)
    plain = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "best.pt"))
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in plain.modules())
    assert main(["distill", "--config", str(small), "--dataset", str(tiny_dataset), "-o",
                 str(tmp_path / "student"), "--teacher", str(tiny_checkpoint), "--loss", "kl",
                 "--hard-weight", "0.25", "--threads", "2"]) == 0
    student = TrainConfig.from_yaml(tmp_path / "student" / "config.yaml")
    assert (student.model, student.teacher, student.distill_loss, student.hard_weight) == (
        "dsmnet_small", str(tiny_checkpoint), "kl", 0.25)
    assert load_checkpoint(tmp_path / "student" / "best.pt")["model"] == "dsmnet_small"
    assert main(["distill", "--config", str(small), "--dataset", str(tiny_dataset), "-o",
                 str(tmp_path / "no_teacher")]) == 2
    assert "distill needs a teacher" in capsys.readouterr().err
    guo = tmp_path / "guo.yaml"  # a model and a teacher named in the file
    guo.write_text(small.read_text() + f"model: guo_s\nteacher: {tiny_checkpoint}\n")
    assert main(["distill", "--config", str(guo), "--dataset", str(tiny_dataset), "-o",
                 str(tmp_path / "guo"), "--threads", "2"]) == 0
    assert TrainConfig.from_yaml(tmp_path / "guo" / "config.yaml").model == "guo_s"
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "student" / "best.pt"), str(tiny_dataset), "-o",
                 str(tmp_path / "eval"), "--threads", "2"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert f"obj_acc {metrics['obj_acc']:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_explains_itself_with_its_configs_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert f"usage: dsmscale {command}" in shown
    config = COMMANDS[command][1]
    if config:
        assert f"YAML with {config} keys" in shown
        fields = getattr(dsmscale, config).model_fields
        numbers = [f for f, info in fields.items() if isinstance(info.default, int | float)
                   and not isinstance(info.default, bool) and f"--{f.replace('_', '-')} " in shown]
        assert numbers  # each of these commands has numeric flags
        for field in numbers:  # every flag of a numeric field shows the field's own default
            assert f"(default {fields[field].default})" in shown, field
