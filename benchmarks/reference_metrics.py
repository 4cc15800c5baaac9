"""Straightforward reference metrics that `rlad.metrics.pixel` is checked against.

Image/pixel AUROC, AP and F1_max come from scikit-learn on the flattened pixels. The PRO curve
follows the MVTec AD reference evaluation step by step (label the 8-connected defect regions of each
mask, give every pixel its FPR step and its region's PRO step, one argsort of all scores, cumulative
sums, keep the last point of each run of tied scores, trapezoid up to `max_fpr` interpolated there).
Slow and memory-hungry on purpose: it is the yardstick, written for clarity, not speed.
Used by benchmarks/metrics_speed.py and tests/metrics/test_pixel.py (one copy only).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def sklearn_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(f1.max())


def reference_pro_curve(anomaly_maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) at every distinct score, from (0, 0) to (1, 1); maps and masks (N, H, W)."""
    masks = np.asarray(masks) != 0
    maps = np.asarray(anomaly_maps)
    fpr_step = np.zeros(maps.shape, dtype=np.float64)
    pro_step = np.zeros(maps.shape, dtype=np.float64)
    n_regions = 0
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        n_regions += count
        fpr_step[index][labelled == 0] = 1.0
        for region in range(1, count + 1):
            inside = labelled == region
            pro_step[index][inside] = 1.0 / inside.sum()
    n_normal = fpr_step.sum()
    order = np.argsort(maps.ravel())[::-1]
    scores = maps.ravel()[order]
    fpr = np.cumsum(fpr_step.ravel()[order]) / n_normal
    pro = np.cumsum(pro_step.ravel()[order]) / n_regions
    last_of_run = np.append(np.diff(scores) != 0, True)
    fpr = np.clip(fpr[last_of_run], 0.0, 1.0)
    pro = np.clip(pro[last_of_run], 0.0, 1.0)
    return np.concatenate(([0.0], fpr, [1.0])), np.concatenate(([0.0], pro, [1.0]))


def trapezoid_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the polyline (x non-decreasing) from x[0] to x_max, interpolating y at x_max."""
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    n_inside = int(inside.sum())
    if xs[-1] < x_max and n_inside < len(x):
        x0, x1, y0, y1 = x[n_inside - 1], x[n_inside], y[n_inside - 1], y[n_inside]
        xs = np.append(xs, x_max)
        ys = np.append(ys, y0 + (y1 - y0) * (x_max - x0) / (x1 - x0))
    return float(np.trapezoid(ys, xs))


def reference_aupro(anomaly_maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3) -> float:
    fpr, pro = reference_pro_curve(anomaly_maps, masks)
    return trapezoid_up_to(fpr, pro, max_fpr) / max_fpr


def reference_evaluate(image_scores, image_labels, anomaly_maps, masks, max_fpr: float = 0.3) -> dict:
    """The metric set of `rlad.metrics.pixel.evaluate` (well-defined cases only)."""
    image_scores = np.asarray(image_scores)
    image_labels = np.asarray(image_labels).astype(int)
    maps = np.asarray(anomaly_maps)
    pixel_labels = (np.asarray(masks) != 0).ravel()
    pixel_scores = maps.ravel()
    return {
        "image_auroc": float(roc_auc_score(image_labels, image_scores)),
        "image_f1_max": sklearn_f1_max(image_scores, image_labels),
        "pixel_auroc": float(roc_auc_score(pixel_labels, pixel_scores)),
        "pixel_ap": float(average_precision_score(pixel_labels, pixel_scores)),
        "pixel_f1_max": sklearn_f1_max(pixel_scores, pixel_labels),
        "aupro": reference_aupro(maps, masks, max_fpr),
    }
