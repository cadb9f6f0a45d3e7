"""Fine-tuning: a run that starts from another checkpoint's weights (``TrainConfig.init``).

The encoder and decoder (and the segmentation and recovery heads) are copied whole; the
classification head is built for the dataset's classes, its first layer (the 1024 features)
copied, and of its last layer the rows of the classes the checkpoint already knows (by name);
rows of new classes keep their fresh initialisation. With ``freeze_encoder_epochs`` the encoder
is not trained for the first epochs, so the new head settles on features it cannot disturb.
"""

from __future__ import annotations

import torch

from dsmscale.checkpoints import check_model_fits, load_checkpoint
from dsmscale.errors import InputError

#: The last classification layer, built anew for the dataset's classes.
CLASSIFIER = ("classifier.weight", "classifier.bias")


def load_initial_weights(model: torch.nn.Module, init: str, model_name: str,
                         classes: list[str], dataset: str) -> dict:
    """Copy ``init``'s weights ('default', 'student' or a checkpoint path) into ``model`` (a
    fresh ``model_name`` for ``classes``); returns what the run started from: the checkpoint,
    its run hash, and the classes whose rows were copied."""
    from dsmscale.weights import resolve_model

    path = resolve_model(init)
    ckpt = load_checkpoint(path)
    if ckpt["model"] != model_name:
        raise InputError(path, f"is a {ckpt['model']}, not a {model_name}: fine-tune it with "
                               f"--model {ckpt['model']}")
    check_model_fits(ckpt, path, dataset)
    state = {k: v for k, v in ckpt["state_dict"].items() if k not in CLASSIFIER}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - set(CLASSIFIER):
        raise InputError(path, f"weights do not fit a {model_name} "
                               f"({len(missing)} missing, {len(unexpected)} unexpected)")
    known = _copy_class_rows(model, ckpt, classes)
    return {"checkpoint": str(path), "name": init, "run_hash": ckpt.get("run_hash"),
            "classes_kept": known}


def _copy_class_rows(model: torch.nn.Module, ckpt: dict, classes: list[str]) -> list[str]:
    """The checkpoint's classifier rows of the classes it knows, copied into ``model``'s."""
    old = list(ckpt["classes"])
    known = [c for c in classes if c in old]
    if "classifier.weight" not in ckpt["state_dict"]:
        return []
    with torch.no_grad():
        for name in known:
            new_row, old_row = classes.index(name), old.index(name)
            model.classifier.weight[new_row] = ckpt["state_dict"]["classifier.weight"][old_row]
            model.classifier.bias[new_row] = ckpt["state_dict"]["classifier.bias"][old_row]
    return known


def set_encoder_trainable(model: torch.nn.Module, trainable: bool) -> None:
    """Train the encoder's weights, or hold them (their gradients are then not computed)."""
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(trainable)
