"""Map-to-box baselines (rlad.policies.baselines)."""

from __future__ import annotations

import numpy as np
import pytest

from rlad.data.pairs.records import PairRecord
from rlad.policies.baselines import absdiff_maps, boxes_from_maps, fit_threshold, map_to_box, nnfeature_maps, scale_box


def records_for(boxes, size_hw=(100, 200)):
    return [PairRecord(f"r{i}", "ref.png", "q.png", box, size_hw, size_hw, "c", "d" if any(box) else "good")
            for i, box in enumerate(boxes)]


def test_map_to_box_keeps_the_largest_component():
    binary = np.zeros((20, 20), bool)
    binary[2:4, 2:4] = True  # 4 pixels
    binary[10:15, 5:12] = True  # 35 pixels
    assert map_to_box(binary) == (5, 10, 12, 15)
    assert map_to_box(np.zeros((5, 5), bool)) == (0, 0, 0, 0)


def test_boxes_are_scaled_back_to_original_pixels():
    assert scale_box((10, 20, 30, 40), (64, 64), (128, 256)) == (40, 40, 120, 80)
    assert scale_box((0, 0, 0, 0), (64, 64), (128, 256)) == (0, 0, 0, 0)
    maps = np.zeros((1, 64, 64), np.float32)
    maps[0, 16:32, 8:24] = 1.0
    (box,) = boxes_from_maps(maps, records_for([(0, 0, 1, 1)], (128, 128)), threshold=0.5)
    assert box == (16, 32, 48, 64)


def synthetic_maps(boxes, size=64, seed=0):
    """Noise everywhere, a bright blob where each defect is (boxes in 100x200 originals)."""
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0, 0.3, size=(len(boxes), size, size)).astype(np.float32)
    for m, box in zip(maps, boxes):
        if any(box):
            x1, y1, x2, y2 = box
            m[int(y1 * size / 100):int(y2 * size / 100), int(x1 * size / 200):int(x2 * size / 200)] += 0.6
    return maps


def test_threshold_fitted_on_calibration_transfers_to_test():
    calib_boxes = [(20, 10, 80, 50), (0, 0, 0, 0), (100, 50, 180, 90), (0, 0, 0, 0), (40, 40, 120, 80)]
    test_boxes = [(10, 10, 60, 60), (0, 0, 0, 0), (120, 20, 190, 70)]
    threshold, metrics = fit_threshold(synthetic_maps(calib_boxes), records_for(calib_boxes))
    assert 0.3 <= threshold <= 0.6
    assert metrics["f1"] == 1.0 and metrics["acc_at_0_3"] == 1.0
    test = records_for(test_boxes)
    from rlad.metrics.grounding import grounding_metrics

    boxes = boxes_from_maps(synthetic_maps(test_boxes, seed=1), test, threshold)
    assert grounding_metrics(boxes, test_boxes)["acc_at_0_3"] == 1.0


def test_absdiff_finds_the_squares(square_pairs):
    maps = absdiff_maps(square_pairs, size=64)
    assert maps.shape == (16, 64, 64)
    for m, r in zip(maps, square_pairs):
        if r.label:
            x1, y1, x2, y2 = r.box
            assert m[y1:y2, x1:x2].mean() > 3 * m.mean() / 2


def test_nnfeature_baseline_runs_on_a_random_trunk(square_pairs):
    maps = nnfeature_maps(square_pairs[:4], size=64, weights="random")
    assert maps.shape == (4, 64, 64) and np.isfinite(maps).all()
