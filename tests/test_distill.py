"""Knowledge distillation: loss terms, a student trained from a teacher, and clear errors."""

import pytest
import torch

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint
from dsmscale.errors import InputError
from dsmscale.models import build_model
from dsmscale.training import TrainConfig, train
from dsmscale.training.losses import distill_terms, loss_terms
from dsmscale.training.step import TrainStep


@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_distill_terms_vanish_when_student_equals_teacher(loss):
    torch.manual_seed(0)
    teacher = {"logits": torch.randn(4, 5), "seg": torch.randn(4, 2, 6, 6, 6),
               "rec": torch.randn(4, 1, 6, 6, 6)}
    same = distill_terms(teacher, teacher, (1.0, 10.0, 1.0), loss)
    assert same["cls"].item() == pytest.approx(0.0, abs=1e-6)
    assert same["rec"].item() == pytest.approx(0.0, abs=1e-6)
    other = {k: v + torch.randn_like(v) for k, v in teacher.items()}
    worse = distill_terms(other, teacher, (1.0, 10.0, 1.0), loss)
    assert worse["cls"] > same["cls"] and worse["seg"] > same["seg"]  # soft CE is minimal at p_t


@pytest.mark.parametrize("hard_weight", [0.0, 0.3, 1.0])
def test_step_mixes_true_and_teacher_losses(hard_weight):
    torch.manual_seed(0)
    student, teacher = build_model("dsmnet_small", 3), build_model("dsmnet_small", 3).eval()
    x = torch.randn(2, 1, 40, 40, 40)
    target = {"label": torch.tensor([0, 2]), "mask": torch.randint(0, 2, (2, 40, 40, 40)),
              "density": torch.rand(2, 1, 40, 40, 40)}
    weights = (1.0, 10.0, 1.0)
    torch.manual_seed(1)  # same dropout draws as the step below
    with torch.no_grad():
        out = student.train()(x)
        true, soft = loss_terms(out, target, weights), distill_terms(out, teacher(x), weights, "kl")
    expected = hard_weight * true["total"] + (1 - hard_weight) * soft["total"]
    step = TrainStep(student, "fp32", channels_last=False, teacher=teacher, distill_loss="kl",
                     hard_weight=hard_weight)
    torch.manual_seed(1)
    assert step(x, target)["total"] == pytest.approx(float(expected), rel=1e-4)


def test_student_learns_from_teacher(tiny_dataset, tiny_checkpoint, tmp_path):
    config = TrainConfig(dataset=str(tiny_dataset), output=str(tmp_path / "student"),
                         model="dsmnet_small", teacher=str(tiny_checkpoint), limit_train=16,
                         limit_val=8, batch_size=8, max_epochs=2, threads=2)
    result = train(config, progress=False)
    history = result["history"]
    assert len(history) == 2 and history[-1]["train_total"] < history[0]["train_total"]
    ckpt = load_checkpoint(result["best_checkpoint"])
    assert ckpt["model"] == "dsmnet_small" and ckpt["config"]["teacher"] == str(tiny_checkpoint)
    assert ckpt["teacher_run_hash"] == load_checkpoint(tiny_checkpoint)["run_hash"]
    student = model_from_checkpoint(ckpt)
    out = student(torch.zeros(1, 1, 40, 40, 40))
    assert set(out) == {"features", "logits", "seg", "rec"}
    assert config.run_hash() != config.model_copy(update={"teacher": None}).run_hash()


def test_resuming_with_another_teacher_is_a_clear_error(tiny_dataset, tiny_checkpoint, tmp_path):
    """'default' may name a newer model by the time a student run resumes: refuse to mix."""
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["run_hash"] = "0ther7eacher"
    torch.save(ckpt, tmp_path / "teacher.pt")
    config = TrainConfig(dataset=str(tiny_dataset), output=str(tmp_path / "s"), model="guo_s",
                         teacher=str(tmp_path / "teacher.pt"), limit_train=8, limit_val=8,
                         batch_size=8, max_epochs=2, threads=2)
    train(config.model_copy(update={"max_epochs": 1}), progress=False)  # constant schedule
    torch.save(load_checkpoint(tiny_checkpoint), tmp_path / "teacher.pt")  # same path, new model
    with pytest.raises(InputError, match="distilled from teacher run 0ther7eacher"):
        train(config, progress=False)


def test_teacher_with_other_classes_is_a_clear_error(tiny_dataset, tiny_checkpoint, tmp_path):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["classes"] = list(reversed(ckpt["classes"]))
    torch.save(ckpt, tmp_path / "other.pt")
    config = TrainConfig(dataset=str(tiny_dataset), output=str(tmp_path / "s"), model="guo_s",
                         teacher=str(tmp_path / "other.pt"), limit_train=8, limit_val=8,
                         max_epochs=1)
    with pytest.raises(InputError, match="teacher classes differ"):
        train(config, progress=False)


def test_shipped_student_replaces_the_teacher_in_a_job():
    from dsmscale.weights import resolve_model

    teacher, student = (load_checkpoint(resolve_model(name)) for name in ("default", "student"))
    assert student["model"] == "dsmnet_small"
    assert student["teacher_run_hash"] == teacher["run_hash"]  # distilled from the shipped default
    assert student["classes"] == teacher["classes"]
    model = model_from_checkpoint(student)
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 40, 40, 40))
    assert set(out) == {"features", "logits", "seg", "rec"}  # all three heads, as the teacher
    assert out["features"].shape == (2, 1024)

    def size(ckpt):
        return sum(v.numel() for v in ckpt["state_dict"].values())

    assert size(student) * 3 < size(teacher)
