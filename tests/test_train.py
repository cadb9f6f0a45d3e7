import json

import numpy as np
import pytest
import torch

from dsmscale import evaluation
from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint, model_grid
from dsmscale.errors import InputError
from dsmscale.evaluation import evaluate_checkpoint
from dsmscale.hardware import machine_name, native_bf16
from dsmscale.inference.backend import InferenceModel
from dsmscale.io.dataset import load_split
from dsmscale.metrics import (
    fsc_curve,
    fsc_resolution,
    segmentation_counts,
    segmentation_scores,
    target_share_bounds,
)
from dsmscale.models import DSMNet
from dsmscale.training import TrainConfig, train
from dsmscale.training.augment import rotate_boxes_180
from dsmscale.training.loop import epochs_since_best, monitored_value
from dsmscale.training.step import TrainStep
from dsmscale.weights import resolve_model


def _config(dataset, out, **kw):
    base = dict(dataset=str(dataset), output=str(out), limit_train=32, limit_val=16,
                batch_size=16, max_epochs=2, threads=2)
    return TrainConfig(**(base | kw))


def test_native_bf16_is_read_from_the_cpu_flags():
    flags = "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx512f {}\n"
    assert native_bf16(flags.format("avx512_bf16 amx_bf16 amx_tile")) == "AMX"
    assert native_bf16(flags.format("avx512_bf16")) == "AVX-512-bf16"
    assert native_bf16(flags.format("avx2")) is None and native_bf16("") is None


def test_train_resume_and_safe_checkpoints(tiny_dataset, tmp_path):
    first = train(_config(tiny_dataset, tmp_path / "run"), progress=False)
    assert first["epochs"] == 2 and (tmp_path / "run" / "curves.png").is_file()
    resumed = train(_config(tiny_dataset, tmp_path / "run", max_epochs=3), progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:2] == first["history"]
    assert {h["machine"] for h in resumed["history"]} == {machine_name(torch.device("cpu"))}
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")  # weights_only=True inside
    assert ckpt["classes"] and ckpt["normalisation"]["input"] == "per_box_zscore"
    model = model_from_checkpoint(ckpt)
    assert model(torch.randn(1, 1, 40, 40, 40))["logits"].shape == (1, len(ckpt["classes"]))
    with pytest.raises(InputError, match="different run config"):
        train(_config(tiny_dataset, tmp_path / "run", lr=0.5), progress=False)


def test_broken_checkpoints(tiny_dataset, tmp_path):
    train(_config(tiny_dataset, tmp_path / "cls", model="cls", max_epochs=1), progress=False)
    good = tmp_path / "cls" / "best.pt"
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(InputError, match="cut.pt: not a checkpoint: torch.save writes a zip"):
        load_checkpoint(cut)
    other = load_checkpoint(good)
    slim = tmp_path / "slim.pt"  # usable (as shipped models are) but not resumable
    torch.save({k: other[k] for k in ("format", "model", "heads", "n_classes", "classes",
                                      "state_dict", "normalisation")}, slim)
    assert load_checkpoint(slim)["model"] == "cls"
    with pytest.raises(InputError, match="slim.pt: incomplete checkpoint: no run_hash, epoch"):
        load_checkpoint(slim, resume=True)
    torch.save({"format": "dsmscale-checkpoint-1"}, slim)
    with pytest.raises(InputError, match="slim.pt: incomplete checkpoint: no model, heads, "):
        load_checkpoint(slim)
    torch.save(other | {"model": "resnet50"}, slim)
    with pytest.raises(InputError, match="slim.pt: unknown model 'resnet50'; dsmscale builds"):
        load_checkpoint(slim)
    other["model"] = "dsmnet"  # a Cls-subnet state dict presented as the full DSM-Net
    with pytest.raises(InputError, match="do not fit model 'dsmnet'"):
        model_from_checkpoint(other, good)


def test_epochs_since_best_follow_the_monitor():
    history = [{"val_total": 1.0, "val_obj_acc": 0.5, "val_miou": 0.7},
               {"val_total": 0.9, "val_obj_acc": 0.4, "val_miou": 0.6},  # lowest loss
               {"val_total": 1.1, "val_obj_acc": 0.6, "val_miou": 0.8},  # highest score
               {"val_total": 1.2, "val_obj_acc": 0.6, "val_miou": 0.8}]  # a tie is no better
    assert epochs_since_best(history, "val_loss") == 2
    assert epochs_since_best(history, "val_score") == 1
    assert monitored_value({"val_total": 2.0, "val_obj_acc": 0.25}, "val_score") == -0.25


def test_monitor_val_score_picks_the_best_checkpoint_by_accuracy_and_miou(tiny_dataset, tmp_path):
    run = tmp_path / "score"
    train(_config(tiny_dataset, run, max_epochs=2, monitor="val_score"), progress=False)
    history = train(_config(tiny_dataset, run, max_epochs=4, monitor="val_score"),
                    progress=False)["history"]  # resumed: the best so far is read back
    scores = [(h["val_obj_acc"] + h["val_miou"]) / 2 for h in history]
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == scores.index(max(scores)) and best["best_val"] == -max(scores)
    assert best["history"] == history[:best["epoch"] + 1]


@pytest.mark.parametrize("augment", [False, True])
def test_training_learns(tiny_dataset, tmp_path, augment):
    result = train(_config(tiny_dataset, tmp_path / "fit", limit_train=16, batch_size=8,
                           max_epochs=6, limit_val=8, augment=augment), progress=False)
    losses = [h["train_total"] for h in result["history"]]
    assert losses[-1] < 0.7 * losses[0], losses


def test_evaluate_scores_what_the_model_predicts(tiny_checkpoint, tiny_dataset, tmp_path):
    metrics = evaluate_checkpoint(tiny_checkpoint, tiny_dataset, "test", tmp_path / "eval",
                                  threads=2)
    ckpt = load_checkpoint(tiny_checkpoint)
    assert model_grid(ckpt) == (40, 10.0) and ckpt["box"] == 40  # recorded, not the fallback
    data = load_split(tiny_dataset, "test", ckpt["classes"],
                      density_scale=ckpt["normalisation"]["density_scale"])
    out = InferenceModel(model_from_checkpoint(ckpt), 8, compile="off")(data.boxes)
    labels = data.labels
    assert metrics["obj_acc"] == pytest.approx(np.mean(out["logits"].argmax(1).numpy() == labels))
    seg = segmentation_scores(segmentation_counts(out["seg"].argmax(1).numpy(), data.masks))
    assert metrics["miou"] == pytest.approx(seg["miou"], abs=0.01)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    confusion = np.asarray(saved["confusion"])
    assert saved["n"] == len(data) == confusion.sum() > 0
    assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics["obj_acc"])
    assert (tmp_path / "eval" / "confusion.png").is_file()
    assert (tmp_path / "eval" / "slices.png").is_file()
    per_box = np.load(tmp_path / "eval" / "per_box.npz")
    np.testing.assert_array_equal(per_box["label"], labels)
    assert np.mean(per_box["predicted"] == labels) == pytest.approx(metrics["obj_acc"])
    assert segmentation_scores(per_box["counts"].sum(0))["miou"] == pytest.approx(metrics["miou"])
    assert sorted(per_box["index"]) == sorted(data.table["index"])


def test_metrics_per_group_pool_back_to_the_whole(tiny_checkpoint, tiny_dataset):
    metrics = evaluate_checkpoint(tiny_checkpoint, tiny_dataset, ["train", "test"], threads=2,
                                  by="class_name")
    groups = metrics["by"]
    assert sum(g["n"] for g in groups.values()) == metrics["n"] and len(groups) > 1
    pooled = sum(g["obj_acc"] * g["n"] for g in groups.values()) / metrics["n"]
    assert pooled == pytest.approx(metrics["obj_acc"])  # every box of a known class here
    assert all(0 <= g["miou"] <= 1 for g in groups.values())
    with pytest.raises(InputError, match="no column 'snr_bin'"):
        evaluate_checkpoint(tiny_checkpoint, tiny_dataset, "test", by="snr_bin")


def test_evaluation_read_block_by_block_scores_as_one_block(tiny_checkpoint, tiny_dataset,
                                                            monkeypatch):
    whole = evaluate_checkpoint(tiny_checkpoint, tiny_dataset, ["train", "test"], threads=2,
                                by="class_name")
    monkeypatch.setattr(evaluation, "BLOCK", 5)  # blocks cut across batches and classes
    blocks = evaluate_checkpoint(tiny_checkpoint, tiny_dataset, ["train", "test"], threads=2,
                                 by="class_name")
    assert whole["n"] > 5
    for key in ("obj_acc", "miou", "confusion", "by"):
        assert blocks[key] == whole[key]
    np.testing.assert_allclose(blocks["fsc_curve"], whole["fsc_curve"], atol=1e-6)


def test_fsc_of_a_map_with_itself_is_one_and_resolution_reads_the_first_drop():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 40, 40)).astype(np.float32)
    np.testing.assert_allclose(fsc_curve(a, a), 1.0, atol=1e-5)
    assert np.abs(fsc_curve(a, rng.normal(size=a.shape))[5:]).max() < 0.3  # unrelated maps
    assert fsc_resolution(np.array([1, .9, .8, .4, .3]), 40, 1.0) == pytest.approx(40 / 3)
    assert fsc_resolution(np.ones(21), 40, 1.0) == 2.0  # never drops: Nyquist
    assert fsc_resolution(np.array([1, .9, .8, .4]), 40, 0.5) == pytest.approx(20 / 3)


def _step_after(micro_batch, x, target):
    torch.manual_seed(0)
    model = DSMNet(4, widths=(4, 8, 8), hidden=16, dropout=0.0, batch_norm=False)
    step = TrainStep(model, "fp32", channels_last=False, micro_batch=micro_batch)
    terms = step(x, target)
    return terms, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("partly_known", [False, True])
def test_micro_batches_accumulate_the_whole_batch_gradient(partly_known):
    """Without BatchNorm, micro-batches of 2 and 4 boxes (and a ragged last one) take exactly the
    optimiser step of one pass over all 6 boxes, and report the same mean loss — also when some
    boxes have no mask and density (has_targets) or a label not learnt (−1), however they fall
    into the micro-batches."""
    torch.manual_seed(1)
    x = torch.randn(6, 1, 40, 40, 40)
    target = {"label": torch.randint(0, 4, (6,)), "mask": torch.randint(0, 2, (6, 40, 40, 40)),
              "density": torch.rand(6, 1, 40, 40, 40)}
    if partly_known:
        target["label"][[1, 2]] = -1
        target["has_targets"] = torch.tensor([True, False, False, False, True, True])
    whole_terms, whole = _step_after(None, x, target)
    for micro in (2, 4):
        terms, params = _step_after(micro, x, target)
        assert terms.keys() == whole_terms.keys()
        for k in terms:
            assert terms[k] == pytest.approx(whole_terms[k], rel=1e-5)
        for p, q in zip(params, whole, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    _, moved = _step_after(None, x, {k: v.flip(0) for k, v in target.items()})
    assert any(not torch.allclose(p, q) for p, q in zip(moved, whole, strict=True))  # can fail


def test_run_identity_holds_micro_batch_augment_and_monitor_only_when_they_act(tmp_path):
    base = dict(dataset="d", output="o", batch_size=16)
    plain = TrainConfig(**base, micro_batch=16).run_hash()
    assert TrainConfig(**base, micro_batch=32).run_hash() == plain
    assert TrainConfig(**base, micro_batch=8).run_hash() != plain
    assert TrainConfig(**base, micro_batch=16, augment=False).run_hash() == plain
    assert TrainConfig(**base, micro_batch=16, augment=True).run_hash() != plain
    assert TrainConfig(**base, micro_batch=16, monitor="val_loss").run_hash() == plain
    assert TrainConfig(**base, micro_batch=16, monitor="val_score").run_hash() != plain
    assert TrainConfig(**base, micro_batch=16, batch_norm=False).run_hash() != plain
    shipped = load_checkpoint(resolve_model("default"))  # trained before batch_norm existed
    assert TrainConfig(**shipped["config"]).run_hash() == shipped["run_hash"]


@pytest.mark.parametrize("cuda", [False, True])
def test_micro_batch_defaults_to_the_device_and_an_explicit_one_wins(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    base = dict(dataset="d", output="o")
    assert TrainConfig(**base).micro_batch == (64 if cuda else 8)
    assert TrainConfig(**base, batch_size=4).micro_batch == 4
    assert TrainConfig(**base, batch_size=32).micro_batch == (32 if cuda else 8)
    assert TrainConfig(**base, micro_batch=16).micro_batch == 16
    # runs made when 8 was the default everywhere keep their identity on a CPU; on a GPU the
    # default is the whole batch, whose micro_batch the identity leaves out
    same = TrainConfig(**base, micro_batch=64 if cuda else 8).run_hash()
    assert TrainConfig(**base).run_hash() == same == ("649f4965c759" if cuda else "6fc7b664ef3a")
    with pytest.raises(InputError, match="config key 'batch_size'"):  # named before the default
        TrainConfig.from_mapping(base | {"batch_size": None}, source="train.yaml")


def _wedge_power(volume: np.ndarray) -> float:
    """Share of the power inside the missing wedge of a ±60° tilt series about y."""
    k = np.fft.fftfreq(volume.shape[0])
    kz, _, kx = np.meshgrid(k, k, k, indexing="ij")
    power = np.abs(np.fft.fftn(volume)) ** 2
    return float(power[np.abs(kz) > np.tan(np.radians(60)) * np.abs(kx)].sum() / power.sum())


def test_augmentation_keeps_the_wedge_and_moves_targets_with_boxes():
    rng = np.random.default_rng(0)
    k = np.fft.fftfreq(40)
    kz, _, kx = np.meshgrid(k, k, k, indexing="ij")
    sampled = np.abs(kz) <= np.tan(np.radians(60)) * np.abs(kx)
    boxes = np.stack([np.fft.ifftn(np.fft.fftn(rng.normal(size=(40,) * 3)) * sampled).real
                      for _ in range(4)]).astype(np.float32)
    assert max(_wedge_power(b) for b in boxes) < 1e-10
    x = torch.from_numpy(boxes)[:, None]
    target = {"label": torch.arange(4), "mask": (x[:, 0] > 0).long(), "density": x.clone()}
    turned, moved = rotate_boxes_180(x, target, np.arange(4))
    assert torch.equal(turned[0], x[0]) and not torch.equal(turned[1], x[1])
    assert torch.equal(moved["density"], turned) and torch.equal(moved["mask"], (turned[:, 0] > 0).long())
    assert torch.equal(moved["label"], target["label"])
    assert max(_wedge_power(b[0].numpy()) for b in turned) < 1e-10
    assert _wedge_power(np.rot90(boxes[0], axes=(0, 2))) > 0.1  # a 90° turn about y would not


def test_target_share_bounds_are_the_target_intersection_and_union():
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:40, :40, :40]
    truth = ((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 7 ** 2).astype(int)
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.01  # errors inside and around the sphere
    pred[flip] = 1 - pred[flip]
    scores = segmentation_scores(segmentation_counts(pred, truth))
    lo, hi = target_share_bounds(scores["pix_acc"], scores["miou"])
    assert lo == pytest.approx(np.mean(pred & truth), rel=1e-6)
    assert hi == pytest.approx(np.mean(pred | truth), rel=1e-6)
    assert lo < truth.mean() < hi
    nothing = np.zeros_like(truth)  # all background predicted: intersection 0, union = truth
    scores = segmentation_scores(segmentation_counts(nothing, truth))
    assert target_share_bounds(scores["pix_acc"], scores["miou"]) == pytest.approx(
        (0.0, truth.mean()), abs=1e-9)
    with pytest.raises(ValueError, match="not reachable"):
        target_share_bounds(0.99, 0.2)
