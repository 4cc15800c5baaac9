"""Boxes turned into masks: any box answer (the compact grounder's, a VLM's) becomes a defect mask by
restricting a fitted pixel model's anomaly map to the box and thresholding it at the run's pixel
threshold (fitted on its validation split, `models.postprocess`). This is rlad's version of
AnomalyR1's box-to-mask step, whose promptable-segmenter code was never released.

`rlad ground --mask PIXEL_RUN` writes the mask of one answer at the query's original size;
`rlad test-grounding --mask PIXEL_RUN...` scores the masks of every answer against the ground-truth
masks (`evaluate_box_masks`): pixel F1 and IoU pooled over every pixel of the scored queries, for

  box_restricted   map >= threshold, inside the answered box (nothing for the zero box)
  map_only         map >= threshold everywhere (the pixel model alone, no box)
  box_only         the box filled (the grounder alone, no map)

computed, as `rlad test` computes its metrics, at the pixel run's square resolution with ground-truth
masks resized so that no defect vanishes. Only real pairs have ground-truth masks (synthetic pairs
are skipped and counted); queries that are a labelled or development image of a pixel run are left
out, as `rlad test` leaves them out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rlad.errors import DataError

MASK_ROWS = ("box_restricted", "map_only", "box_only")


def box_region(shape_hw: tuple[int, int], box, original_hw: tuple[int, int]) -> np.ndarray:
    """The pixels of an (h, w) grid that a box in original pixels covers, even partly; none for the
    zero box or no box."""
    region = np.zeros(shape_hw, bool)
    if box is None or not any(float(v) for v in box):
        return region
    (h, w), (oh, ow) = shape_hw, original_hw
    x1, y1, x2, y2 = (float(v) for v in box)
    c1, c2 = max(0, math.floor(x1 * w / ow)), min(w, math.ceil(x2 * w / ow))
    r1, r2 = max(0, math.floor(y1 * h / oh)), min(h, math.ceil(y2 * h / oh))
    region[r1:r2, c1:c2] = True
    return region


def box_mask(raw_map: np.ndarray, box, original_hw: tuple[int, int], threshold: float) -> np.ndarray:
    """The map at or above `threshold` inside the box (an empty mask for the zero box or no box)."""
    return (np.asarray(raw_map) >= threshold) & box_region(raw_map.shape, box, original_hw)


def mask_scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Pixel F1, IoU, precision and recall pooled over every pixel of (N, H, W) boolean masks."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    tp = float(np.logical_and(pred, truth).sum())
    fp = float(np.logical_and(pred, ~truth).sum())
    fn = float(np.logical_and(~pred, truth).sum())
    return {"pixel_f1": 2 * tp / max(2 * tp + fp + fn, 1e-12), "pixel_iou": tp / max(tp + fp + fn, 1e-12),
            "precision": tp / max(tp + fp, 1e-12), "recall": tp / max(tp + fn, 1e-12)}


def ground_truth_masks(records: Sequence) -> dict[str, str | None]:
    """query path -> its ground-truth mask path ("" for a normal image) for real pairs whose query lies
    in an MVTec-layout folder (`ROOT/test/<type>/<file>`); other queries are absent."""
    from rlad.data.folder import discover

    found: dict[str, str] = {}
    roots: dict[Path, dict] = {}
    for record in records:
        if record.source != "real":
            continue
        query = Path(record.query).resolve()
        root = query.parents[2] if len(query.parents) > 2 else None
        if root is None or query.parents[1].name != "test":
            continue
        if root not in roots:
            try:
                roots[root] = {s.path.resolve(): s for s in discover(root).test}
            except DataError:
                roots[root] = {}
        sample = roots[root].get(query)
        if sample is not None:
            found[record.query] = str(sample.mask_path) if sample.mask_path else ""
    return found


def evaluate_box_masks(mask_runs: Sequence[str | Path], records: Sequence, boxes: Sequence) -> dict:
    """Pixel F1 / IoU of box-restricted masks, the map's own mask and the filled box against the
    ground truth (see the module docstring); `boxes` in the queries' original pixels (None = no box)."""
    from rlad.data.images import load_mask
    from rlad.data.transforms import resize_mask
    from rlad.workflows.pixel_maps import excluded_by_protocol, runs_by_category

    runs = runs_by_category(mask_runs)
    masks = ground_truth_masks(records)
    left_out = excluded_by_protocol(list(masks), list(runs.values()))
    chosen = [(r, b) for r, b in zip(records, boxes) if r.query in masks and r.query not in left_out]
    missing = sorted({r.category for r, _ in chosen} - set(runs))
    if missing:
        raise DataError(f"--mask: no pixel run for categor{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} "
                        f"(runs given: {', '.join(sorted(runs))}); pass one fitted run per category")
    if not chosen:
        raise DataError("--mask: none of the pairs is a real pair with a ground-truth mask to score against")
    rows: dict[str, list] = {name: [] for name in MASK_ROWS}
    truth = []
    for category, run in runs.items():
        part = [(r, b) for r, b in chosen if r.category == category]
        if not part:
            continue
        boxes_of = {r.query: (b, r.query_size) for r, b in part}
        threshold = run.post.pixel_threshold
        for path, _, raw_map, _ in run.predictions(list(boxes_of), desc=f"{category}: box masks"):
            box, original_hw = boxes_of[path]
            inside = box_region(raw_map.shape, box, original_hw)
            rows["box_restricted"].append((raw_map >= threshold) & inside)
            rows["map_only"].append(raw_map >= threshold)
            rows["box_only"].append(inside)
            mask_path = masks[path]
            truth.append(resize_mask(load_mask(mask_path, expected_size=original_hw), raw_map.shape)
                         if mask_path else np.zeros(raw_map.shape, bool))
    truth = np.stack(truth)
    report = {name: mask_scores(np.stack(rows[name]), truth) for name in MASK_ROWS}
    report.update(n_scored=len(truth), n_defective=int(truth.reshape(len(truth), -1).any(axis=1).sum()),
                  n_without_mask=len(records) - len(masks), n_excluded_protocol=len(left_out))
    return report


def ground_mask(mask_run: str | Path, query: str | Path, box, out: str | Path) -> dict:
    """The box-restricted mask of one answer at the query's original size, written as a PNG."""
    from rlad.data.pairs.records import image_hw
    from rlad.data.transforms import resize_map_to
    from rlad.viz import save_png
    from rlad.workflows.pixel_maps import PixelRun

    run = PixelRun.open(mask_run)
    (_, _, raw_map, _), = run.predictions([str(query)], desc="box mask")
    original_hw = image_hw(query)
    full = resize_map_to(raw_map, original_hw)
    mask = box_mask(full, box, original_hw, run.post.pixel_threshold)
    save_png(Path(out), mask.astype(np.uint8) * 255)
    return {"mask": str(out), "mask_pixels": int(mask.sum()),
            "map_pixels": int((full >= run.post.pixel_threshold).sum())}
