"""Each family's box convention: ground truth into it and answers back to original pixels, with
Qwen2.5-VL's resized frame taken from the processor itself (odd sizes, portrait and landscape)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from rlad.boxes import CoordinateMode, format_answer
from rlad.data.pairs.records import PairRecord
from rlad.tasks.grounding import GroundingTask

from rlad.policies.hf_vlm.loading import FAMILIES

SIZES = [(64, 64), (37, 91), (91, 37), (480, 640), (641, 479), (13, 300)]  # (height, width)


def _record(size_hw, box) -> PairRecord:
    return PairRecord("r", "ref.png", "query.png", box, size_hw, size_hw, "c", "d")


@pytest.mark.parametrize("family", FAMILIES)
def test_resized_frame_is_what_the_processor_feeds_the_model(family, make_hf_policy):
    # A pixel budget that really resizes (the tiny processor's own is 56 x 56 pixels).
    policy = make_hf_policy(family, min_pixels=32 * 32, max_pixels=128 * 128)
    processor = policy.processor.image_processor
    for h, w in SIZES:
        image = Image.fromarray(np.zeros((h, w, 3), np.uint8))
        grid = processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
        assert policy.resized_hw((h, w)) == (grid[1] * processor.patch_size, grid[2] * processor.patch_size), (h, w)


@pytest.mark.parametrize("family", FAMILIES)
def test_boxes_round_trip_through_each_familys_convention(family, make_hf_policy):
    policy = make_hf_policy(family, min_pixels=32 * 32, max_pixels=128 * 128)
    expected = CoordinateMode.RESIZED if family == "qwen2_5_vl" else CoordinateMode.RELATIVE_1000
    assert policy.coordinate_mode is expected
    task = GroundingTask()
    for h, w in SIZES:
        for box in [(0, 0, w, h), (w // 4, h // 3, w // 2 + 1, h - 1), (w - 3, h - 2, w, h)]:
            record = _record((h, w), box)
            target = task.target(record, policy).box
            if family == "qwen2_5_vl":
                rh, rw = policy.resized_hw((h, w))
                assert 0 <= target[0] < target[2] <= rw and 0 <= target[1] < target[3] <= rh
                assert target[2] == math.floor(box[2] * rw / w + 0.5)  # absolute pixels of the resized input
            else:
                assert 0 <= target[0] < target[2] <= 1000 and 0 <= target[1] < target[3] <= 1000
                assert target[2] == math.floor(box[2] * 1000 / w + 0.5)
            frame_w, frame_h = (policy.resized_hw((h, w))[::-1] if family == "qwen2_5_vl" else (1000, 1000))
            back = task.answer_box(format_answer(target), record, policy)
            # one unit of the policy's frame (at least a pixel) is the rounding error allowed
            tol_x, tol_y = max(1.0, w / frame_w), max(1.0, h / frame_h)
            for got, want, tol in zip(back, box, (tol_x, tol_y, tol_x, tol_y)):
                assert abs(got - want) <= tol, (family, (h, w), box, target, back)


def test_normal_queries_keep_the_zero_box(make_hf_policy):
    policy = make_hf_policy("qwen2_5_vl")
    task = GroundingTask()
    record = _record((91, 37), (0, 0, 0, 0))
    assert task.target(record, policy).box == (0, 0, 0, 0)
    assert task.answer_box("<think></think><answer>(0,0),(0,0)</answer>", record, policy) == (0, 0, 0, 0)
