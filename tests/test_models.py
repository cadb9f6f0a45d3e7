import pytest
import torch

from dsmscale.models import MODEL_NAMES, DSMNet, build_model
from dsmscale.training.losses import loss_terms

PARAMS = {"dsmnet": 1_955_321, "cls": 1_595_222, "seg": 1_800_642, "ssn3d_ed": 896_642,
          "dsrf3d_v2": 18_316_470,
          "dsmnet_small": 540_169, "guo_l": 1_013_942, "guo_m": 505_654, "guo_s": 160_934}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_and_gradients(name):
    torch.manual_seed(0)
    model = build_model(name, 22)
    x = torch.randn(2, 1, 40, 40, 40)
    out = model(x)
    heads = set(model.heads)
    assert ("logits" in out) == ("cls" in heads) and ("seg" in out) == ("seg" in heads)
    assert ("rec" in out) == ("rec" in heads)
    if "logits" in out:
        assert out["logits"].shape == (2, 22) and out["features"].shape == (2, 1024)
    if "seg" in out:
        assert out["seg"].shape == (2, 2, 40, 40, 40)
    if "rec" in out:
        assert out["rec"].shape == (2, 1, 40, 40, 40)
    target = {"label": torch.tensor([3, 7]), "mask": torch.randint(0, 2, (2, 40, 40, 40)),
              "density": torch.rand(2, 1, 40, 40, 40)}
    model.eval()  # no dropout: every unit gets gradient
    loss_terms(model(x), target, (1.0, 10.0, 1.0))["total"].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient at {pname}"


@pytest.mark.parametrize("name,count", PARAMS.items())
def test_parameter_counts(name, count):  # README's table
    assert sum(p.numel() for p in build_model(name, 22).parameters()) == count


def test_parameter_count_without_batch_norm():
    assert sum(p.numel() for p in DSMNet(22, batch_norm=False).parameters()) == 1_953_593


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batch_norm_can_be_left_out_of_every_model(name):
    def norms(model):
        return sum(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())

    assert norms(build_model(name, 22)) > 0 and norms(build_model(name, 22, batch_norm=False)) == 0


def test_heads_share_one_backbone():
    full, cls = build_model("dsmnet", 22), build_model("cls", 22)
    cls_keys = set(cls.state_dict())
    assert cls_keys < set(full.state_dict()) and not any(k.startswith("decoder") for k in cls_keys)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", 22)
