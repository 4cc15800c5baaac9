"""Boxes turned into masks: the box's pixels on the map grid, the restricted mask, pooled pixel F1 / IoU,
and the evaluation against ground-truth masks with a fitted pixel model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rlad.data.pairs.builders import build_pairs
from rlad.data.pairs.records import load_pairs
from rlad.workflows.box_masks import box_mask, box_region, evaluate_box_masks, ground_mask, mask_scores


def test_box_region_scales_original_pixels_to_the_map_grid():
    region = box_region((4, 4), (2, 2, 6, 6), (8, 8))  # a box in an 8x8 image on a 4x4 map
    assert region.sum() == 4 and region[1:3, 1:3].all()
    partly = box_region((4, 4), (3, 0, 5, 1), (8, 8))  # covers pixels 1 and 2 of the first row, partly
    assert partly.sum() == 2 and partly[0, 1] and partly[0, 2]
    assert not box_region((4, 4), (0, 0, 0, 0), (8, 8)).any() and not box_region((4, 4), None, (8, 8)).any()
    assert box_region((4, 4), (0, 0, 8, 8), (8, 8)).all()


def test_box_mask_keeps_only_map_pixels_inside_the_box():
    raw = np.zeros((4, 4))
    raw[0, 0] = raw[2, 2] = 5.0
    mask = box_mask(raw, (4, 4, 8, 8), (8, 8), threshold=1.0)
    assert mask.sum() == 1 and mask[2, 2]


def test_mask_scores_by_hand():
    pred = np.array([[[1, 1, 0, 0]]], bool)
    truth = np.array([[[0, 1, 1, 0]]], bool)
    scores = mask_scores(pred, truth)
    assert scores == {"pixel_f1": pytest.approx(0.5), "pixel_iou": pytest.approx(1 / 3),
                      "precision": pytest.approx(0.5), "recall": pytest.approx(0.5)}


@pytest.fixture
def pixel_run(tiny_mvtec, tmp_path):
    from rlad.workflows.detection import build_config, fit

    run = tmp_path / "px"
    fit("pixelstats", tiny_mvtec, run, build_config("pixelstats", overrides=["image_size=32"]))
    return run


def test_evaluation_with_ground_truth_boxes(pixel_run, tiny_mvtec, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    build_pairs(tiny_mvtec, pairs, synthetic=2, reference="random")
    records = load_pairs(pairs)
    report = evaluate_box_masks([pixel_run], records, [r.box for r in records])
    real = [r for r in records if r.source == "real"]
    assert report["n_scored"] == len(real) and report["n_without_mask"] == len(records) - len(real) == 2
    assert report["n_defective"] == sum(r.label for r in real)
    restricted, alone, box = report["box_restricted"], report["map_only"], report["box_only"]
    # The restricted mask is the intersection of the map's mask and the box: it can only lose recall
    # against either, and with the ground-truth box it never adds a false positive the map did not have.
    assert restricted["recall"] <= min(alone["recall"], box["recall"]) + 1e-9
    assert restricted["precision"] >= alone["precision"] - 1e-9
    assert box["recall"] == pytest.approx(1.0)  # a ground-truth box covers its (largest) defect
    # No box at all: nothing is kept.
    nothing = evaluate_box_masks([pixel_run], records, [None] * len(records))
    assert nothing["box_restricted"]["recall"] == 0.0 and nothing["map_only"] == alone


def test_ground_mask_is_written_at_the_query_size(pixel_run, tiny_mvtec, tmp_path):
    query = tiny_mvtec / "test" / "hole" / "000.png"
    out = tmp_path / "mask.png"
    result = ground_mask(pixel_run, query, (0, 0, 64, 48), out)
    written = np.asarray(Image.open(out))
    assert written.shape == (48, 64) and set(np.unique(written)) <= {0, 255}
    assert result["mask_pixels"] == int((written > 0).sum()) <= result["map_pixels"]
    empty = ground_mask(pixel_run, query, (0, 0, 0, 0), tmp_path / "empty.png")
    assert empty["mask_pixels"] == 0
