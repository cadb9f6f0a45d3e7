"""Scores shared by tests, benchmarks and reports."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def match_points(
    predicted: np.ndarray, truth: np.ndarray, radius: float, beta: float = 4.0,
) -> dict[str, float]:
    """Precision, recall and F-beta of predicted vs true points (same units, e.g. pixels).

    Pairs closer than ``radius`` are matched one-to-one, closest first; the CZII challenge uses
    radius = 0.5 × particle radius and beta = 4.
    """
    predicted = np.asarray(predicted, float).reshape(-1, 3)
    truth = np.asarray(truth, float).reshape(-1, 3)
    tp = 0
    if len(predicted) and len(truth):
        pairs = cKDTree(predicted).sparse_distance_matrix(
            cKDTree(truth), radius, output_type="ndarray")
        used_p = np.zeros(len(predicted), bool)
        used_t = np.zeros(len(truth), bool)
        for i, j in zip(pairs["i"][np.argsort(pairs["v"])], pairs["j"][np.argsort(pairs["v"])],
                        strict=True):
            if not used_p[i] and not used_t[j]:
                used_p[i] = used_t[j] = True
                tp += 1
    precision = tp / len(predicted) if len(predicted) else 0.0
    recall = tp / len(truth) if len(truth) else 0.0
    b2 = beta * beta
    denom = b2 * precision + recall
    f_beta = (1 + b2) * precision * recall / denom if denom else 0.0
    return {"precision": precision, "recall": recall, "f_beta": f_beta, "true_positives": tp}
