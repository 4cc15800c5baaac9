"""Image- and pixel-level anomaly metrics: AUROC, average precision, F1_max and AUPRO.

Every number here is exact (no binning): it matches scikit-learn's `roc_auc_score`,
`average_precision_score` and the F1 maximum over `precision_recall_curve`, and the MVTec AD
reference AUPRO, up to floating-point rounding.

How it stays fast on tens of millions of pixels: every metric only needs, for each *distinct score
of a positive* v, how many positives and negatives score >= v and > v (see `_Ranks`). Recall and
PRO only change at positive scores, and between two of them the best F1 and the PRO/FPR polyline
are fully determined by those counts. So the only work on all pixels is one plain `np.sort` of the
scores (SIMD-accelerated in numpy, split over threads) followed by binary searches for the positive
scores; positives (defect pixels, usually a few percent) are sorted together with their region id.

Conventions:
- A sample is predicted anomalous when its score is >= the threshold (thresholds are score values).
- Undefined metrics (no positives, or no negatives where the metric needs them) are NaN, never an
  exception: the standalone functions warn with `UndefinedMetricWarning`, `evaluate` lists them with
  the reason under the key `undefined`.
- NaN or inf in a score or map, labels outside {0, 1}, masks outside {0, 1, 255} and shape
  mismatches raise `rlad.errors.DataError` naming the offending index and shapes.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from rlad.errors import ConfigError, DataError

__all__ = [
    "UndefinedMetricWarning",
    "aupro",
    "auroc",
    "average_precision",
    "evaluate",
    "f1_max",
    "pro_curve",
]

# Below this many pixels per thread, spreading the sort over threads costs more than it saves.
_PIXELS_PER_THREAD = 1 << 21
_MAX_THREADS = 8
# MVTec AD's reference labels defect regions with a 3x3 ones structure: 8-connectivity.
_REGION_STRUCTURE = np.ones((3, 3), dtype=bool)


class UndefinedMetricWarning(RuntimeWarning):
    """A metric was asked for on data where it has no meaning (e.g. AUROC without positives)."""


@dataclass(frozen=True)
class _Ranks:
    """Counts at each distinct positive score, in descending score order.

    `pro` is the mean over defect regions of the covered share of each region at score >= value
    (only filled when regions were given).
    """

    values: np.ndarray  # distinct scores of positives, descending
    positives_at_or_above: np.ndarray  # int64
    negatives_at_or_above: np.ndarray  # int64
    negatives_above: np.ndarray  # int64
    n_positive: int
    n_negative: int
    pro: np.ndarray | None = None  # float64

    @property
    def positives_at(self) -> np.ndarray:
        return np.diff(self.positives_at_or_above, prepend=0)


# ----------------------------------------------------------------------------------------------
# Metrics computed from ranks (pure functions; the expensive part is building the ranks)


def _auroc_from_ranks(ranks: _Ranks) -> float:
    # Mann-Whitney: P(score_pos > score_neg) + 0.5 P(equal); identical to the ROC trapezoid area.
    negatives_below = ranks.n_negative - ranks.negatives_at_or_above
    negatives_tied = ranks.negatives_at_or_above - ranks.negatives_above
    wins = np.dot(ranks.positives_at.astype(np.float64), 2.0 * negatives_below + negatives_tied)
    return float(wins / (2.0 * ranks.n_positive * ranks.n_negative))


def _average_precision_from_ranks(ranks: _Ranks) -> float:
    # scikit-learn's step-wise AP: sum over thresholds of (recall gain) x (precision there).
    true_pos = ranks.positives_at_or_above.astype(np.float64)
    precision = true_pos / (true_pos + ranks.negatives_at_or_above)
    return float(np.dot(ranks.positives_at / ranks.n_positive, precision))


def _f1_max_from_ranks(ranks: _Ranks) -> tuple[float, float]:
    # Between two positive scores F1 can only fall (more false positives, same true positives),
    # so the maximum over all thresholds is reached at a positive score.
    true_pos = ranks.positives_at_or_above.astype(np.float64)
    f1 = 2.0 * true_pos / (true_pos + ranks.negatives_at_or_above + ranks.n_positive)
    best = int(np.argmax(f1))  # first in descending order: the highest threshold reaching it
    return float(f1[best]), float(ranks.values[best])


def _pro_curve_from_ranks(ranks: _Ranks) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the exact PRO-over-FPR polyline, from (0, 0) to (1, 1).

    At each distinct positive score v there are two vertices: just above v (FPR of negatives > v,
    PRO of the previous step) and at v. Thresholds between positive scores only slide FPR along a
    horizontal stretch, so their points lie on the polyline and are left out.
    """
    assert ranks.pro is not None
    fpr_above = ranks.negatives_above / ranks.n_negative
    fpr_at = ranks.negatives_at_or_above / ranks.n_negative
    pro_before = np.concatenate(([0.0], ranks.pro[:-1]))
    fpr = np.concatenate(([0.0], np.column_stack((fpr_above, fpr_at)).ravel(), [1.0]))
    pro = np.concatenate(([0.0], np.column_stack((pro_before, ranks.pro)).ravel(), [1.0]))
    np.clip(pro, 0.0, 1.0, out=pro)  # the cumulative region shares can exceed 1 by rounding
    repeated = np.concatenate(([False], (np.diff(fpr) == 0) & (np.diff(pro) == 0)))
    return fpr[~repeated], pro[~repeated]


def _normalized_area(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> float:
    """Trapezoid area under the polyline from FPR 0 to max_fpr (interpolated there) / max_fpr."""
    inside = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr[:inside] <= max_fpr
    area = float(np.sum(np.diff(fpr[:inside]) * (pro[1:inside] + pro[: inside - 1]) * 0.5))
    if inside < len(fpr) and fpr[inside - 1] < max_fpr:
        x0, x1, y0, y1 = fpr[inside - 1], fpr[inside], pro[inside - 1], pro[inside]
        y_at_limit = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_at_limit) * (max_fpr - x0)
    return float(area / max_fpr)


# ----------------------------------------------------------------------------------------------
# Building ranks


def _distinct_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in an ascending array."""
    if sorted_values.size == 0:
        return np.zeros(0, dtype=np.int64)
    changes = np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1
    return np.concatenate(([0], changes)).astype(np.int64)


def _count_below(sorted_scores: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(#scores < v, #scores <= v) for each v of the ascending `values`."""
    below = np.searchsorted(sorted_scores, values, side="left")
    at_or_below = below.copy()
    # Exact ties are rare in real maps: a second binary search only for the values found in there.
    found = below < sorted_scores.size
    tied = np.zeros(values.size, dtype=bool)
    tied[found] = sorted_scores[below[found]] == values[found]
    if tied.any():
        at_or_below[tied] = np.searchsorted(sorted_scores, values[tied], side="right")
    return below, at_or_below


# (#other scores < v, #other scores <= v, #other scores) for ascending distinct positive scores v
ScoreCounter = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, int]]


def _ranks_from_sorted(
    positives_sorted: np.ndarray,
    count_scores: ScoreCounter,
    *,
    counts_include_positives: bool,
    region_of_positive: np.ndarray | None = None,
    region_sizes: np.ndarray | None = None,
) -> _Ranks:
    """Ranks from the ascending positive scores and a counter over the other scores.

    `counts_include_positives`: the counter sees every score (positives too), so the positives' own
    counts are subtracted to get the negatives'. `region_of_positive` (aligned with
    `positives_sorted`) and `region_sizes` turn on the PRO column.
    """
    n_positive = positives_sorted.size
    starts = _distinct_starts(positives_sorted)
    ends = np.append(starts[1:], n_positive)
    values = positives_sorted[starts]
    below, at_or_below, n_counted = count_scores(values)
    n_negative = n_counted
    if counts_include_positives:
        below = below - starts
        at_or_below = at_or_below - ends
        n_negative -= n_positive
    pro = None
    if region_of_positive is not None and region_sizes is not None:
        # Each defect pixel adds 1/|its region| to its region's covered share; the mean over
        # regions divides by their number. Summed from the top so no large totals cancel.
        weights = 1.0 / region_sizes[region_of_positive]
        share_at_or_above = np.cumsum(weights[::-1])[::-1]
        pro = share_at_or_above[starts][::-1] / region_sizes.size
    return _Ranks(
        values=values[::-1],
        positives_at_or_above=(n_positive - starts)[::-1],
        negatives_at_or_above=(n_negative - below)[::-1],
        negatives_above=(n_negative - at_or_below)[::-1],
        n_positive=n_positive,
        n_negative=n_negative,
        pro=pro,
    )


def _sort_float32_with_ids(values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort float32 values ascending carrying integer ids along, without an argsort.

    The float's bits are mapped to an order-preserving uint32 and packed above the id in a uint64,
    which numpy sorts with SIMD far faster than it argsorts floats.
    """
    bits = (values + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0 (equal floats)
    negative = (bits >> 31).astype(bool)
    keys = np.where(negative, ~bits, bits | np.uint32(0x80000000))
    packed = (keys.astype(np.uint64) << np.uint64(32)) | ids.astype(np.uint64)
    packed.sort()
    sorted_ids = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    keys = (packed >> np.uint64(32)).astype(np.uint32)
    was_negative = keys < np.uint32(0x80000000)
    bits = np.where(was_negative, ~keys, keys & np.uint32(0x7FFFFFFF))
    return bits.view(np.float32), sorted_ids


def _sort_with_ids(values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype == np.float32 and (ids.size == 0 or int(ids.max()) < 2**32):
        return _sort_float32_with_ids(values, ids)
    order = np.argsort(values, kind="stable")
    return values[order], ids[order]


def _thread_count(n_values: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return int(max(1, min(cpus, _MAX_THREADS, n_values // _PIXELS_PER_THREAD)))


def _map_pixel_counter(maps: Sequence[np.ndarray], dtype: np.dtype) -> ScoreCounter:
    """A counter over all pixels of all maps: each of a few threads copies and sorts its share of
    the maps (numpy releases the GIL in sort and searchsorted), counts, and frees the copy."""

    def count(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        n_pixels = sum(m.size for m in maps)
        groups = [g for g in np.array_split(np.arange(len(maps)), _thread_count(n_pixels)) if g.size]

        def count_group(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
            chunk = np.concatenate([maps[i].ravel() for i in indices], dtype=dtype)
            chunk.sort()
            # Sorting puts -inf first and +inf, then NaN, last: the ends vouch for every pixel.
            finite = chunk.size == 0 or bool(np.isfinite(chunk[0]) and np.isfinite(chunk[-1]))
            return (*_count_below(chunk, values), finite)

        if len(groups) == 1:
            results = [count_group(groups[0])]
        else:
            with ThreadPoolExecutor(len(groups)) as pool:
                results = list(pool.map(count_group, groups))
        if not all(finite for _, _, finite in results):
            _raise_for_non_finite_map(maps)
        below = np.sum([r[0] for r in results], axis=0, dtype=np.int64)
        at_or_below = np.sum([r[1] for r in results], axis=0, dtype=np.int64)
        return below, at_or_below, n_pixels

    return count


# ----------------------------------------------------------------------------------------------
# Input validation


def _score_dtype(dtypes: Sequence[np.dtype], name: str) -> np.dtype:
    """float32 / float64 are kept as given (rounding could merge distinct scores and change ties)."""
    common = np.result_type(*dtypes) if dtypes else np.dtype(np.float32)
    if not (np.issubdtype(common, np.floating) or np.issubdtype(common, np.integer) or common == bool):
        raise DataError(f"{name} must hold real numbers, got dtype {common}")
    if common in (np.float32, np.float64):
        return common
    if np.can_cast(common, np.float32, casting="safe"):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _as_scores(scores, name: str) -> np.ndarray:
    array = np.asarray(scores)
    array = array.astype(_score_dtype([array.dtype], name), copy=False).ravel()
    finite = np.isfinite(array)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise DataError(f"{name}[{index}] is {array[index]}; scores must be finite numbers")
    return array


def _as_labels(labels, name: str) -> np.ndarray:
    array = np.asarray(labels).ravel()
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.number)):
        raise DataError(f"{name} must be 0/1 or bool, got dtype {array.dtype}")
    bad = (array != 0) & (array != 1)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name}[{index}] is {array[index]}; labels must be 0 (normal) or 1 (anomalous)")
    return array.astype(bool)


def _check_same_length(scores: np.ndarray, labels: np.ndarray, names: tuple[str, str]) -> None:
    if scores.shape != labels.shape:
        raise DataError(f"{names[0]} has {scores.size} entries but {names[1]} has {labels.size}")


def _as_image_list(images, name: str) -> list[np.ndarray]:
    """(N, H, W) array or a sequence of (H, W) arrays -> list of 2-D arrays (views when possible)."""
    if not isinstance(images, (list, tuple)):  # an ndarray, or anything array-like (a CPU tensor)
        array = np.asarray(images)
        if array.ndim != 3:
            raise DataError(f"{name} must have shape (N, H, W), got shape {array.shape}")
        return list(array)
    result = [np.asarray(image) for image in images]
    for index, image in enumerate(result):
        if image.ndim != 2:
            raise DataError(f"{name}[{index}] must have shape (H, W), got shape {image.shape}")
    return result


def _binary_mask(mask: np.ndarray, name: str, index: int) -> np.ndarray:
    if mask.dtype == bool:
        return mask
    if not np.issubdtype(mask.dtype, np.number):
        raise DataError(f"{name}[{index}] must be bool or numeric, got dtype {mask.dtype}")
    defect = mask != 0
    marked = mask[defect]
    bad = (marked != 1) & (marked != 255)
    if bad.any():
        raise DataError(
            f"{name}[{index}] has the value {marked[bad][0]}; masks must be bool, {{0, 1}} or "
            "{0, 255} (binarise soft masks first)"
        )
    return defect


def _check_maps_and_masks(anomaly_maps, masks) -> tuple[list[np.ndarray], list[np.ndarray]]:
    maps = _as_image_list(anomaly_maps, "anomaly_maps")
    mask_list = _as_image_list(masks, "masks")
    if len(maps) != len(mask_list):
        raise DataError(f"anomaly_maps has {len(maps)} maps but masks has {len(mask_list)}")
    if not maps:
        raise DataError("anomaly_maps is empty: nothing to evaluate")
    for index, (anomaly_map, mask) in enumerate(zip(maps, mask_list)):
        if anomaly_map.shape != mask.shape:
            raise DataError(
                f"anomaly_maps[{index}] has shape {anomaly_map.shape} but masks[{index}] has shape "
                f"{mask.shape}"
            )
    return maps, [_binary_mask(mask, "masks", i) for i, mask in enumerate(mask_list)]


def _check_max_fpr(max_fpr: float) -> float:
    if not (0.0 < float(max_fpr) <= 1.0):
        raise ConfigError(f"max_fpr must be in (0, 1], got {max_fpr}")
    return float(max_fpr)


def _raise_for_non_finite_map(maps: Sequence[np.ndarray]) -> None:
    for index, anomaly_map in enumerate(maps):
        finite = np.isfinite(anomaly_map)
        if not finite.all():
            bad = anomaly_map[~finite][0]
            raise DataError(f"anomaly_maps[{index}] contains {bad}; maps must be finite numbers")


# ----------------------------------------------------------------------------------------------
# Ranks for score vectors and for pixel maps


def _score_ranks(scores, labels, names: tuple[str, str] = ("scores", "labels")) -> _Ranks:
    score_array = _as_scores(scores, names[0])
    label_array = _as_labels(labels, names[1])
    _check_same_length(score_array, label_array, names)
    positives = np.sort(score_array[label_array])
    negatives = np.sort(score_array[~label_array])
    return _ranks_from_sorted(
        positives,
        lambda values: (*_count_below(negatives, values), negatives.size),
        counts_include_positives=False,
    )


def _pixel_ranks(maps: list[np.ndarray], masks: list[np.ndarray], *, with_regions: bool) -> _Ranks:
    """Ranks over all pixels of all images; with `with_regions`, also the PRO column."""
    from scipy import ndimage

    dtype = _score_dtype([m.dtype for m in maps], "anomaly_maps")
    positive_values, region_ids, region_sizes = [], [], []
    n_regions = 0
    for anomaly_map, mask in zip(maps, masks):
        if not mask.any():
            continue
        positive_values.append(anomaly_map[mask].astype(dtype, copy=False))
        if with_regions:
            labelled, count = ndimage.label(mask, structure=_REGION_STRUCTURE)
            inside = labelled[mask].astype(np.int64)
            region_ids.append(inside + (n_regions - 1))
            region_sizes.append(np.bincount(inside, minlength=count + 1)[1:])
            n_regions += count

    positives = np.concatenate(positive_values) if positive_values else np.zeros(0, dtype=dtype)
    counter = _map_pixel_counter(maps, dtype)
    if not with_regions:
        positives.sort()
        return _ranks_from_sorted(positives, counter, counts_include_positives=True)
    ids = np.concatenate(region_ids) if region_ids else np.zeros(0, dtype=np.int64)
    positives, ids = _sort_with_ids(positives, ids)
    sizes = np.concatenate(region_sizes) if region_sizes else np.zeros(0, dtype=np.int64)
    return _ranks_from_sorted(
        positives,
        counter,
        counts_include_positives=True,
        region_of_positive=ids,
        region_sizes=sizes.astype(np.float64),
    )


def _why_undefined(ranks: _Ranks, metric: str, positives: str, negatives: str) -> str | None:
    """The reason `metric` is undefined on these ranks, or None when it is defined."""
    needs_negatives = metric in ("auroc", "aupro")
    if ranks.n_positive == 0:
        return f"no {positives}"
    if needs_negatives and ranks.n_negative == 0:
        return f"no {negatives}"
    return None


def _warn_undefined(metric: str, reason: str) -> None:
    warnings.warn(f"{metric} is undefined ({reason}); returning NaN", UndefinedMetricWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# Public API


def auroc(scores, labels) -> float:
    """Area under the ROC curve (positives = label 1), ties counted half; NaN without both classes."""
    ranks = _score_ranks(scores, labels)
    reason = _why_undefined(ranks, "auroc", "positive labels", "negative labels")
    if reason:
        _warn_undefined("AUROC", reason)
        return float("nan")
    return _auroc_from_ranks(ranks)


def average_precision(scores, labels) -> float:
    """scikit-learn's average precision (step-wise, no interpolation); NaN without positives."""
    ranks = _score_ranks(scores, labels)
    reason = _why_undefined(ranks, "ap", "positive labels", "negative labels")
    if reason:
        _warn_undefined("average precision", reason)
        return float("nan")
    return _average_precision_from_ranks(ranks)


def f1_max(scores, labels) -> tuple[float, float]:
    """(best F1 over all thresholds, the highest threshold reaching it); (NaN, NaN) without positives.

    The threshold is a score value: samples with score >= it are predicted anomalous.
    """
    ranks = _score_ranks(scores, labels)
    reason = _why_undefined(ranks, "f1", "positive labels", "negative labels")
    if reason:
        _warn_undefined("F1 max", reason)
        return float("nan"), float("nan")
    return _f1_max_from_ranks(ranks)


def pro_curve(anomaly_maps, masks) -> tuple[np.ndarray, np.ndarray]:
    """The exact per-region-overlap curve (fpr, pro), from (0, 0) to (1, 1), fpr non-decreasing.

    Defect regions are the 8-connected components of each mask (as in the MVTec AD reference). At
    threshold t, PRO is the mean over all regions of all images of the share of the region's pixels
    with score >= t, and FPR is the share of all mask-0 pixels (normal images included) with score
    >= t. Only the polyline's vertices are returned (points on its horizontal stretches are
    omitted). Raises DataError when the masks have no defect pixel or no normal pixel.
    """
    maps, mask_list = _check_maps_and_masks(anomaly_maps, masks)
    ranks = _pixel_ranks(maps, mask_list, with_regions=True)
    reason = _why_undefined(ranks, "aupro", "defect pixels in the masks", "normal pixels in the masks")
    if reason:
        raise DataError(f"the PRO curve is undefined: {reason}")
    return _pro_curve_from_ranks(ranks)


def aupro(anomaly_maps, masks, max_fpr: float = 0.3) -> float:
    """Area under the PRO curve from FPR 0 to `max_fpr` (interpolated there), divided by `max_fpr`.

    See `pro_curve` for the curve. NaN (with a warning) when the masks have no defect or no normal
    pixel.
    """
    max_fpr = _check_max_fpr(max_fpr)
    maps, mask_list = _check_maps_and_masks(anomaly_maps, masks)
    ranks = _pixel_ranks(maps, mask_list, with_regions=True)
    reason = _why_undefined(ranks, "aupro", "defect pixels in the masks", "normal pixels in the masks")
    if reason:
        _warn_undefined("AUPRO", reason)
        return float("nan")
    return _normalized_area(*_pro_curve_from_ranks(ranks), max_fpr)


def evaluate(image_scores, image_labels, anomaly_maps, masks, *, max_fpr: float = 0.3) -> dict:
    """The full metric set of one test split.

    image_scores (N,), image_labels (N,) in {0, 1}; anomaly_maps (N, H, W) floats, or a list of N
    2-D arrays (sizes may differ between images as long as each map matches its mask); masks the
    same shapes, bool / {0, 1} / {0, 255}. Pixel metrics pool every pixel of every image, normal
    images included.

    Returns floats `image_auroc`, `image_f1_max`, `image_f1_threshold`, `pixel_auroc`, `pixel_ap`,
    `pixel_f1_max`, `pixel_f1_threshold`, `aupro` (integrated to `max_fpr`, normalised), and
    `undefined`: {metric name: reason} for each metric that is NaN because the data cannot define
    it (e.g. no defective image -> image_auroc; no defect pixel -> every pixel metric).
    The F1 thresholds are the highest score values reaching the maximum (score >= threshold means
    anomalous); they are chosen on this data, so use them for information, never as an operating
    point measured on the same test set.
    """
    max_fpr = _check_max_fpr(max_fpr)
    maps, mask_list = _check_maps_and_masks(anomaly_maps, masks)
    image_ranks = _score_ranks(image_scores, image_labels, ("image_scores", "image_labels"))
    if image_ranks.n_positive + image_ranks.n_negative != len(maps):
        raise DataError(
            f"image_scores has {image_ranks.n_positive + image_ranks.n_negative} entries but "
            f"anomaly_maps has {len(maps)} maps"
        )
    pixel_ranks = _pixel_ranks(maps, mask_list, with_regions=True)

    nan = float("nan")
    result: dict = {}
    undefined: dict[str, str] = {}
    image_kinds = ("defective images (image_labels has no 1)", "normal images (image_labels has no 0)")
    pixel_kinds = ("defect pixels in the masks", "normal pixels in the masks")

    def defined(name: str, ranks: _Ranks, metric: str, kinds: tuple[str, str]) -> bool:
        reason = _why_undefined(ranks, metric, *kinds)
        if reason:
            undefined[name] = reason
        return reason is None

    result["image_auroc"] = (
        _auroc_from_ranks(image_ranks) if defined("image_auroc", image_ranks, "auroc", image_kinds) else nan
    )
    if defined("image_f1_max", image_ranks, "f1", image_kinds):
        result["image_f1_max"], result["image_f1_threshold"] = _f1_max_from_ranks(image_ranks)
    else:
        result["image_f1_max"] = result["image_f1_threshold"] = nan
    result["pixel_auroc"] = (
        _auroc_from_ranks(pixel_ranks) if defined("pixel_auroc", pixel_ranks, "auroc", pixel_kinds) else nan
    )
    result["pixel_ap"] = (
        _average_precision_from_ranks(pixel_ranks) if defined("pixel_ap", pixel_ranks, "ap", pixel_kinds) else nan
    )
    if defined("pixel_f1_max", pixel_ranks, "f1", pixel_kinds):
        result["pixel_f1_max"], result["pixel_f1_threshold"] = _f1_max_from_ranks(pixel_ranks)
    else:
        result["pixel_f1_max"] = result["pixel_f1_threshold"] = nan
    result["aupro"] = (
        _normalized_area(*_pro_curve_from_ranks(pixel_ranks), max_fpr)
        if defined("aupro", pixel_ranks, "aupro", pixel_kinds)
        else nan
    )
    result["undefined"] = undefined
    return result
