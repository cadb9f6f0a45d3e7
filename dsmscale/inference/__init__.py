"""Inference, shared by ``dsmscale run`` (on Ray actors), ``dsmscale evaluate`` and the
benchmarks: a checkpoint's network prepared for the hardware (`InferenceModel`) and the
per-particle outputs it predicts (`Predictor`)."""

from dsmscale.inference.backend import InferenceModel
from dsmscale.inference.predictor import Predictor

__all__ = ["InferenceModel", "Predictor"]
