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


def segmentation_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(2, 3) counts per class {background, target}: intersection, union, truth voxels."""
    out = np.zeros((2, 3), dtype=np.int64)
    for c in (0, 1):
        p, t = pred == c, truth == c
        out[c] = (np.count_nonzero(p & t), np.count_nonzero(p | t), np.count_nonzero(t))
    return out


def segmentation_scores(counts: np.ndarray) -> dict[str, float]:
    """Pixel accuracy and mIoU over {background, target} from accumulated `segmentation_counts`."""
    iou = counts[:, 0] / np.maximum(counts[:, 1], 1)
    return {"pix_acc": float(counts[:, 0].sum() / max(counts[:, 2].sum(), 1)),
            "miou": float(iou.mean()), "iou_background": float(iou[0]), "iou_target": float(iou[1])}


def target_share_bounds(pix_acc: float, miou: float) -> tuple[float, float]:
    """Bounds on the target's share of all voxels that pixel accuracy and mIoU imply.

    Both scores pool voxels over a set of boxes, as `segmentation_scores` does. With error share
    e = 1 − pix_acc and target IoU a, the target's union (prediction ∪ truth) is u = e / (1 − a)
    of all voxels and its intersection a·u; the true target share lies between the two. The
    background IoU is then (1 − u) / (1 + e − u), so the mIoU fixes a. Taking the target as the
    minority class (u ≤ 1/2), the mIoU rises with a and a is found by bisection. Returns
    (intersection share, union share), fractions of all voxels; `ValueError` when the scores
    bound nothing (perfect pixel accuracy) or contradict each other.
    """
    e = 1.0 - pix_acc
    if not 0.0 < e < 0.25:
        raise ValueError(f"pixel accuracy {pix_acc} is outside (0.75, 1)")

    def miou_at(a: float) -> float:
        u = e / (1.0 - a)
        return (a + (1.0 - u) / (1.0 + e - u)) / 2.0

    lo, hi = 0.0, 1.0 - 2.0 * e
    if not miou_at(lo) - 1e-9 <= miou <= miou_at(hi) + 1e-9:  # rounding: all background is a = 0
        raise ValueError(f"mIoU {miou} is not reachable at pixel accuracy {pix_acc}")
    for _ in range(100):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if miou_at(mid) < miou else (lo, mid)
    union = e / (1.0 - lo)
    return lo * union, union


def fsc_curve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fourier shell correlation of two cubic volumes (..., z, y, x), batched over the leading
    axes: one curve per pair, shells 0 … box // 2 (torch-fourier-shell-correlation)."""
    import torch
    from torch_fourier_shell_correlation import fourier_shell_correlation

    return fourier_shell_correlation(torch.as_tensor(a, dtype=torch.float32),
                                     torch.as_tensor(b, dtype=torch.float32)).numpy()


def fsc_resolution(curve: np.ndarray, box: int, voxel_size_nm: float, threshold: float = 0.5) -> float:
    """Resolution (nm) where the FSC first drops below ``threshold``; shell r ↔ box·voxel/r.

    Returns the Nyquist resolution (2 voxels) if the curve never drops below the threshold.
    """
    below = np.flatnonzero(np.asarray(curve)[1:] < threshold)
    shell = below[0] + 1 if len(below) else box // 2
    return float(box * voxel_size_nm / shell)


def agreement(contingency: np.ndarray) -> dict[str, float]:
    """ARI and NMI (arithmetic normalisation, as scikit-learn's defaults) from a clusters ×
    classes contingency table, so no per-particle label arrays are needed."""
    from sklearn.metrics import mutual_info_score

    c = contingency[contingency.sum(1) > 0][:, contingency.sum(0) > 0].astype(np.float64)
    pairs = c * (c - 1) / 2
    n = c.sum()
    rows, cols = c.sum(1), c.sum(0)
    a, b = (rows * (rows - 1) / 2).sum(), (cols * (cols - 1) / 2).sum()
    expected = a * b / (n * (n - 1) / 2)
    top = (a + b) / 2
    ari = 1.0 if top == expected else float((pairs.sum() - expected) / (top - expected))

    def entropy(m: np.ndarray) -> float:
        p = m[m > 0] / n
        return float(-(p * np.log(p)).sum())

    h = (entropy(rows) + entropy(cols)) / 2
    nmi = 1.0 if h == 0 else float(mutual_info_score(None, None, contingency=c) / h)
    return {"ari": ari, "nmi": nmi}


def cluster_recall_purity(clusters: np.ndarray, is_class: np.ndarray,
                          enriched: float = 0.8) -> dict:
    """How one class falls into clusters: the cluster holding most of its particles, with that
    cluster's size, recall (its share of the class) and purity (the class's share of it), and
    the same over every cluster at least ``enriched`` of the class.

    Args:
        clusters: (n,) cluster of each particle.
        is_class: (n,) whether each particle is of the class.
    """
    clusters, is_class = np.asarray(clusters), np.asarray(is_class, bool)
    total = int(is_class.sum())
    if not total:
        raise ValueError("no particle of the class")
    ids, sizes = np.unique(clusters, return_counts=True)
    of_class = np.array([np.count_nonzero(is_class & (clusters == c)) for c in ids])
    best = int(np.argmax(of_class))
    rich = of_class / sizes >= enriched
    return {"best_cluster": int(ids[best]), "cluster_size": int(sizes[best]), "total": total,
            "recall": float(of_class[best] / total), "purity": float(of_class[best] / sizes[best]),
            "enriched_clusters": {int(c): {"of_class": int(n), "size": int(s)}
                                  for c, n, s in zip(ids[rich], of_class[rich], sizes[rich],
                                                     strict=True)},
            "enriched_recall": float(of_class[rich].sum() / total),
            "enriched_purity": float(of_class[rich].sum() / max(sizes[rich].sum(), 1))}
