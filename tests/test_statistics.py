"""Paired statistics of two models on the same boxes, checked against statsmodels and by
construction."""

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from dsmscale.metrics import segmentation_counts, segmentation_scores
from dsmscale.statistics import (
    mcnemar,
    paired_bootstrap_accuracy,
    paired_bootstrap_miou,
    pooled_miou,
    verdict,
)


@pytest.mark.parametrize("seed", range(4))
def test_mcnemar_matches_statsmodels_exact_test(seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(size=300) < 0.85
    b = np.where(rng.uniform(size=300) < 0.9, a, ~a)  # b disagrees with a on ~10 % of boxes
    ours = mcnemar(a, b)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    theirs = statsmodels_mcnemar(table, exact=True)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert ours.difference == pytest.approx(a.mean() - b.mean())


def test_mcnemar_of_identical_predictions_is_undecided():
    same = np.array([True, False, True])
    result = mcnemar(same, same)
    assert result.p_value == 1.0 and verdict(result, claim_a_better=True) == "undecided"
    with pytest.raises(ValueError, match="same non-empty boxes"):
        mcnemar(same, same[:2])


def _counts(rng, n, error):
    """Per-box segmentation counts of masks with about ``error`` of their voxels wrong."""
    out = np.zeros((n, 2, 3), np.int64)
    for i in range(n):
        truth = rng.uniform(size=(8, 8, 8)) < 0.3
        pred = np.where(rng.uniform(size=truth.shape) < 1 - error, truth, ~truth)
        out[i] = segmentation_counts(pred.astype(int), truth.astype(int))
    return out


def test_pooled_miou_is_the_metrics_own():
    counts = _counts(np.random.default_rng(0), 20, 0.3)
    assert pooled_miou(counts) == pytest.approx(segmentation_scores(counts.sum(0))["miou"])


def test_the_bootstrap_interval_separates_a_real_difference_and_covers_none():
    rng = np.random.default_rng(1)
    better, worse = _counts(rng, 200, 0.1), _counts(rng, 200, 0.3)
    real = paired_bootstrap_miou(better, worse, n_resamples=500)
    assert real.low < real.difference < real.high and real.low > 0
    assert verdict(real, claim_a_better=True) == "holds"
    assert verdict(real, claim_a_better=False) == "does not hold"
    noise = paired_bootstrap_miou(better, better[rng.permutation(200)], n_resamples=500)
    assert noise.low < 0 < noise.high and verdict(noise, claim_a_better=True) == "undecided"


def test_the_accuracy_interval_is_the_paired_difference_and_matches_the_normal_one():
    rng = np.random.default_rng(2)
    a = rng.uniform(size=3000) < 0.85
    b = np.where(rng.uniform(size=3000) < 0.9, a, ~a)
    ours = paired_bootstrap_accuracy(a, b)
    only_a, only_b, n = np.sum(a & ~b), np.sum(~a & b), len(a)
    assert ours.difference == pytest.approx(a.mean() - b.mean())
    # the textbook (Wald) interval of a paired difference of proportions (Agresti 2013, 10.1)
    half = 1.96 * np.sqrt(only_a + only_b - (only_a - only_b) ** 2 / n) / n
    assert ours.low == pytest.approx(ours.difference - half, abs=0.002)
    assert ours.high == pytest.approx(ours.difference + half, abs=0.002)
    assert verdict(ours, True) == verdict(mcnemar(a, b), True)
    better = paired_bootstrap_accuracy(a | (rng.uniform(size=n) < 0.3), a)
    assert better.low > 0 and verdict(better, True) == "holds"
