"""Paired tests of two models scored on the same boxes: is a difference the paper claims real?

- Object accuracy: McNemar's exact test on the boxes exactly one model classifies correctly
  (two-sided binomial test of the discordant pairs at p = 1/2, `scipy.stats.binomtest`).
  Its effect size: a paired bootstrap interval of the accuracy difference
  (`paired_bootstrap_accuracy`), to set beside a difference the paper reports.
- mIoU (pooled over boxes, as `dsmscale.metrics.segmentation_scores` pools it): a paired
  bootstrap over boxes of the difference (`scipy.stats.bootstrap`, BCa interval).

`verdict` reads either as the paper's claim holding, not holding (significant the other way) or
undecided.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Verdict = Literal["holds", "does not hold", "undecided"]


@dataclass(frozen=True)
class McNemar:
    """``only_a``/``only_b``: of ``n`` boxes, those only model a / only model b classifies
    correctly; ``p_value``: two-sided exact test."""

    only_a: int
    only_b: int
    n: int
    p_value: float

    @property
    def difference(self) -> float:
        """Object accuracy of a minus that of b."""
        return (self.only_a - self.only_b) / self.n

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's exact test of two models' per-box correctness (bool arrays over the same
    boxes, in the same order)."""
    a, b = _paired(correct_a, correct_b)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return McNemar(only_a, only_b, len(a), p)


@dataclass(frozen=True)
class PairedBootstrap:
    """A score of a minus the same score of b, and its ``confidence`` interval."""

    difference: float
    low: float
    high: float
    confidence: float

    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


def pooled_miou(counts: np.ndarray) -> np.ndarray:
    """mIoU over {background, target} of per-box `segmentation_counts` (..., n, 2, 3) pooled
    over the boxes axis."""
    total = counts.sum(axis=-3)
    return (total[..., 0] / np.maximum(total[..., 1], 1)).mean(axis=-1)


def paired_bootstrap_miou(counts_a: np.ndarray, counts_b: np.ndarray, n_resamples: int = 2000,
                          confidence: float = 0.95, seed: int = 0) -> PairedBootstrap:
    """Paired bootstrap over boxes of ``pooled_miou(a) - pooled_miou(b)``; ``counts_*`` are
    (n, 2, 3) per-box segmentation counts of the same boxes in the same order."""
    counts_a, counts_b = np.asarray(counts_a), np.asarray(counts_b)
    if counts_a.shape != counts_b.shape or counts_a.shape[1:] != (2, 3):
        raise ValueError(f"counts must both be (n, 2, 3), got {counts_a.shape} and "
                         f"{counts_b.shape}")
    return _paired_bootstrap(lambda index: pooled_miou(counts_a[index]) -
                             pooled_miou(counts_b[index]), len(counts_a), n_resamples,
                             confidence, seed)


def paired_bootstrap_accuracy(correct_a: np.ndarray, correct_b: np.ndarray,
                              n_resamples: int = 2000, confidence: float = 0.95,
                              seed: int = 0) -> PairedBootstrap:
    """Paired bootstrap over boxes of object accuracy of a minus that of b (per-box
    correctness, bool arrays over the same boxes in the same order)."""
    a, b = _paired(correct_a, correct_b)
    gain = a.astype(np.float64) - b
    return _paired_bootstrap(lambda index: gain[index].mean(axis=-1), len(gain), n_resamples,
                             confidence, seed)


def _paired_bootstrap(difference: Callable[[np.ndarray], np.ndarray], n: int, n_resamples: int,
                      confidence: float, seed: int) -> PairedBootstrap:
    """BCa bootstrap of ``difference(index)`` (a statistic of the boxes ``index``, (..., n)
    integer arrays) over resamples of the n boxes."""
    result = stats.bootstrap((np.arange(n),), lambda index, axis=-1: difference(
        np.asarray(index, int)), vectorized=True, n_resamples=n_resamples,
        confidence_level=confidence, batch=200, random_state=np.random.default_rng(seed))
    return PairedBootstrap(float(difference(np.arange(n))), float(result.confidence_interval.low),
                           float(result.confidence_interval.high), confidence)


def verdict(test: McNemar | PairedBootstrap, claim_a_better: bool) -> Verdict:
    """The paper's claim that model a beats model b (``claim_a_better``; False: that b beats
    a) read from a paired test of a against b at p < 0.05 (or a 95 % interval)."""
    if not test.significant():
        return "undecided"
    return "holds" if (test.difference > 0) == claim_a_better else "does not hold"


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, bool).ravel(), np.asarray(b, bool).ravel()
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"need the same non-empty boxes for both models, got {len(a)} and "
                         f"{len(b)}")
    return a, b
