"""Model cards (`dsmscale.report.model_card`): what a shipped model is and how well it does."""

from dsmscale.checkpoints import load_checkpoint, save_checkpoint, slim_checkpoint
from dsmscale.report.model_card import model_card


def test_the_card_gives_training_time_hardware_and_scores_on_unseen_tomograms(tiny_checkpoint,
                                                                              tmp_path):
    ckpt = slim_checkpoint(load_checkpoint(tiny_checkpoint))
    target = save_checkpoint(ckpt, tmp_path / "dsmnet_default.pt")
    metrics = {"A": {"n": 10, "obj_acc": 0.5, "pix_acc": 0.99, "miou": 0.8,
                     "fsc_resolution_nm": 4.4, "snr": 0.06}}
    training = {"epochs": 5, "wall_s": 4500.0, "precision": "bf16", "threads": 2,
                "machine": "x86_64 (2 threads available)"}
    held_out = {"randomised tomograms at SNR ≥ 0.03": {"n": 4000, "obj_acc": 0.9012,
                                                        "miou": 0.8567},
                "foreign zero-shot `f`": {"n": 96, "obj_acc": None, "miou": 0.8}}
    card = model_card("default", target, ckpt, metrics, {"snr_measured": {"A": 0.5}}, "cmd",
                      "abc", training, held_out, "`results/default_model.json`")
    assert ("- **Training:** 5 epochs in 75 min, bf16 on 2 threads of x86_64 (2 threads "
            "available).") in card
    assert "| A (SNR 0.060) | 10 | 50.00 % | 99.00 % | 80.00 % | 4.4 |" in card
    assert "## On tomograms it never saw (`results/default_model.json`)" in card
    assert "| randomised tomograms at SNR ≥ 0.03 | 4000 | 90.12 % | 85.67 % |" in card
    assert "| foreign zero-shot `f` | 96 | — | 80.00 % |" in card
    plain = model_card("default", target, ckpt, metrics, {}, "cmd", "abc")
    assert "| A (SNR 0.060) |" in plain  # the test data's SNR, whatever the training data's
    assert "**Training:**" not in plain and "never saw" not in plain
