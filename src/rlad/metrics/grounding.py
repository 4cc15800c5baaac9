"""Grounding metrics for the box task: mIoU, Acc@0.3, F1 (DifferAD-R1 evaluation protocol).

Per query the *score* is:

* normal query (ground truth is the zero box): 1 if the prediction is the zero box, else 0;
* defective query: IoU of prediction and ground truth, 0 when the prediction is missing
  (`None`: unparsable output), the zero box, or degenerate.

mIoU is the mean score, Acc@t the share of queries with score >= t.

F1 counts, following the protocol text exactly:

* TP: defective query whose prediction has IoU >= t;
* FP: normal query whose prediction is a real (non-zero, valid) box. An unparsable answer on a
  normal query is wrong for mIoU/Acc but is not a *box*, so it is not an FP;
* FN: defective query with a zero, invalid or low-IoU prediction. A real box in the wrong place on a
  defective query counts only as FN, not also as FP (detection-style matching would count both;
  the protocol lists it under FN only, and rlad follows the protocol).

All boxes must share one coordinate frame (rlad uses original pixels).
"""

from __future__ import annotations

from typing import Sequence

from rlad.boxes import box_area, box_intersection, box_iou, clip_box, is_degenerate, is_zero_box
from rlad.errors import DataError


def query_score(pred, gt) -> float:
    """The per-query score mIoU averages (see module docstring)."""
    if is_zero_box(gt):
        return 1.0 if is_zero_box(pred) else 0.0
    if pred is None or is_zero_box(pred):
        return 0.0
    return box_iou(pred, gt)


def _check_lengths(pred_boxes: Sequence, gt_boxes: Sequence, *more: Sequence) -> None:
    if len(pred_boxes) != len(gt_boxes) or any(len(m) != len(gt_boxes) for m in more):
        lengths = [len(pred_boxes), len(gt_boxes), *(len(m) for m in more)]
        raise DataError(f"grounding metrics: predictions and ground truth differ in length ({lengths})")
    if len(gt_boxes) == 0:
        raise DataError("grounding metrics: no queries to evaluate")
    for i, gt in enumerate(gt_boxes):
        if gt is None:
            raise DataError(f"grounding metrics: ground truth #{i} is missing (use the zero box for normal)")


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def grounding_metrics(pred_boxes: Sequence, gt_boxes: Sequence, iou_threshold: float = 0.3) -> dict:
    """miou, acc_at_0_3 (at `iou_threshold`), f1, precision, recall and the counts behind them.

    `miou_normal` / `miou_defective` split the mean score by query kind (NaN-free: None when a kind is
    absent) because a policy that always answers "normal" can look fine on a normal-heavy set.
    """
    _check_lengths(pred_boxes, gt_boxes)
    scores = [query_score(p, g) for p, g in zip(pred_boxes, gt_boxes)]
    normal = [is_zero_box(g) for g in gt_boxes]
    tp = sum(1 for s, nrm in zip(scores, normal) if not nrm and s >= iou_threshold)
    fp = sum(1 for p, nrm in zip(pred_boxes, normal) if nrm and p is not None and not is_degenerate(p))
    n_defective = sum(1 for nrm in normal if not nrm)
    fn = n_defective - tp
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, n_defective)
    normal_scores = [s for s, nrm in zip(scores, normal) if nrm]
    defective_scores = [s for s, nrm in zip(scores, normal) if not nrm]
    return {
        "miou": sum(scores) / len(scores),
        "acc_at_0_3": sum(1 for s in scores if s >= iou_threshold) / len(scores),
        "f1": _ratio(2 * precision * recall, precision + recall),
        "precision": precision,
        "recall": recall,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n": len(scores),
        "n_normal": len(normal_scores),
        "n_defective": n_defective,
        "n_invalid": sum(1 for p in pred_boxes if p is None),
        "miou_normal": sum(normal_scores) / len(normal_scores) if normal_scores else None,
        "miou_defective": sum(defective_scores) / len(defective_scores) if defective_scores else None,
        "iou_threshold": iou_threshold,
    }


def box_exploit_stats(pred_boxes: Sequence, gt_boxes: Sequence, sizes: Sequence[tuple[int, int]],
                      whole_image_fraction: float = 0.8) -> dict:
    """How often a policy uses the boxes DCLR still pays for when they are useless.

    Over defective queries (on normal queries any box earns 0, so there is nothing to exploit):
    `whole_image_rate` = share whose prediction covers more than `whole_image_fraction` of the image
    (DCLR pays ~0.4 for the whole image on a small defect); `far_box_rate` = share whose prediction
    is a real box that does not overlap the ground truth at all (IoU 0, no touching area);
    `mean_area_fraction` = mean share of the image the real-box predictions cover. `sizes` are the
    (H, W) of each query image, in the frame of the boxes.
    """
    _check_lengths(pred_boxes, gt_boxes, sizes)
    whole = far = boxed = 0
    area_fractions = []
    n_defective = 0
    for pred, gt, (h, w) in zip(pred_boxes, gt_boxes, sizes):
        if is_zero_box(gt):
            continue
        n_defective += 1
        if pred is None or is_degenerate(pred):
            continue
        if h <= 0 or w <= 0:
            raise DataError(f"box exploit stats: image size {(h, w)} is not positive")
        boxed += 1
        fraction = box_area(clip_box(pred, (h, w))) / float(h * w)
        area_fractions.append(fraction)
        whole += fraction > whole_image_fraction
        far += box_intersection(pred, gt) == 0.0
    return {
        "n_defective": n_defective,
        "n_boxed": boxed,
        "whole_image_rate": _ratio(whole, n_defective),
        "far_box_rate": _ratio(far, n_defective),
        "mean_area_fraction": sum(area_fractions) / len(area_fractions) if area_fractions else 0.0,
    }
