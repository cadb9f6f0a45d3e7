"""The inference backend: compiled and eager agree, batching and padding are invisible."""

import copy

import numpy as np
import pytest
import torch

from dsmscale.inference.backend import BATCH_CANDIDATES, InferenceModel, require_cuda_for_gpus
from dsmscale.models import build_model


@pytest.fixture(scope="module")
def model_and_boxes():
    torch.manual_seed(0)
    model = build_model("dsmnet", 4).eval()
    boxes = np.random.default_rng(0).standard_normal((5, 40, 40, 40)).astype(np.float32)
    return model, boxes


def test_batch_size_does_not_change_outputs(model_and_boxes):
    model, boxes = model_and_boxes
    one = InferenceModel(copy.deepcopy(model), 2, compile="off", precision="fp32")(boxes)
    two = InferenceModel(copy.deepcopy(model), 5, compile="off", precision="fp32")(boxes)
    assert set(one) == {"features", "logits", "seg", "rec"}
    for key in one:
        assert one[key].shape[0] == 5
        torch.testing.assert_close(one[key], two[key], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_compiled_matches_eager_with_padded_last_batch(model_and_boxes):
    model, boxes = model_and_boxes
    eager = InferenceModel(copy.deepcopy(model), 4, compile="off", precision="fp32")
    compiled = InferenceModel(copy.deepcopy(model), 4, compile="on", precision="fp32")
    assert compiled.compiled and compiled.compile_s > 0
    want, got = eager(boxes), compiled(boxes)  # 5 boxes: batches of 4 and 1 (padded to 4)
    for key in want:
        assert got[key].shape == want[key].shape
        torch.testing.assert_close(got[key], want[key], atol=2e-3, rtol=2e-3)


def test_wrong_box_shape_is_a_clear_error(model_and_boxes):
    model, _ = model_and_boxes
    with pytest.raises(ValueError, match=r"expected boxes of shape \(n, 40, 40, 40\)"):
        InferenceModel(model, 2, compile="off")(np.zeros((2, 32, 32, 32), np.float32))


def test_auto_batch_size_is_the_fastest_timed_candidate(model_and_boxes):
    model, _ = model_and_boxes
    boxes = np.random.default_rng(1).standard_normal((5, 16, 16, 16)).astype(np.float32)
    tuned = InferenceModel(copy.deepcopy(model), "auto", box=16, compile="off", precision="fp32")
    rates = tuned.batch_rates
    assert rates and set(rates) <= set(BATCH_CANDIDATES)
    assert tuned.batch_size == max(rates, key=rates.get)
    fixed = InferenceModel(copy.deepcopy(model), 2, box=16, compile="off", precision="fp32")
    want, got = fixed(boxes), tuned(boxes)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad", [0, "big", 2.5])
def test_bad_batch_size_is_a_clear_error(model_and_boxes, bad):
    with pytest.raises(ValueError, match="batch_size must be 'auto' or an integer"):
        InferenceModel(model_and_boxes[0], bad, compile="off")


def test_an_actor_holding_gpus_without_cuda_refuses_to_run_on_the_cpu():
    with pytest.raises(RuntimeError, match="holds GPU 0 but torch .* sees no CUDA device"):
        require_cuda_for_gpus([0], cuda_available=False)
    require_cuda_for_gpus([0], cuda_available=True)
    require_cuda_for_gpus([], cuda_available=False)  # a CPU actor
