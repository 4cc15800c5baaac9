import numpy as np
import pytest

from rlad.boxes import (ZERO_BOX, CoordinateMode, box_area, box_center, box_diagonal, box_iou, clip_box,
                        coordinate_mode, format_answer, is_degenerate, is_zero_box, mask_to_box, parse_answer,
                        qwen25_resized_hw, to_pixels, to_policy_coords)
from rlad.errors import ConfigError, DataError


# ------------------------------------------------------------------------------- parse_answer
def test_parse_paren_form_with_spaces():
    parsed = parse_answer("<think>the left edge</think>\n<answer> ( 10 , 20 ) , ( 30 ,40) </answer>")
    assert parsed.has_think and parsed.has_answer
    assert parsed.box == (10, 20, 30, 40)
    assert parsed.n_boxes == 1 and parsed.integer_coords and parsed.error is None
    assert parsed.think == "the left edge"


def test_parse_bracket_form_and_json_style():
    assert parse_answer("<answer>[1, 2, 3, 4]</answer>").box == (1, 2, 3, 4)
    assert parse_answer('<answer>{"bbox_2d": [5,6,70,80]}</answer>').box == (5, 6, 70, 80)


def test_parse_zero_box_is_a_valid_answer():
    parsed = parse_answer("<think>t</think><answer>(0,0),(0,0)</answer>")
    assert parsed.box == ZERO_BOX and is_zero_box(parsed.box)


def test_parse_first_valid_box_wins_and_all_boxes_are_counted():
    parsed = parse_answer("<answer>(9,9),(3,3) then [1,2,3,4] and (5,6),(7,8)</answer>")
    assert parsed.box == (1, 2, 3, 4)  # the swapped first box is not valid
    assert parsed.n_boxes == 3


def test_parse_decimals_are_read_but_flagged():
    parsed = parse_answer("<answer>(10.5,20),(30,40.25)</answer>")
    assert parsed.box == (10.5, 20, 30, 40.25)
    assert not parsed.integer_coords


@pytest.mark.parametrize("body", ["(-5,0),(10,10)", "(5,5),(5,9)", "(10,10),(2,20)", "[3,3,3,3]"])
def test_parse_rejects_negative_degenerate_and_swapped(body):
    parsed = parse_answer(f"<answer>{body}</answer>")
    assert parsed.box is None and parsed.n_boxes == 1 and parsed.error


@pytest.mark.parametrize("text, has_think, has_answer", [
    ("no tags at all (1,2),(3,4)", False, False),
    ("<think>unclosed <answer>(1,2),(3,4)</answer>", False, True),
    ("<answer>(1,2),(3,4)</answer><think>after</think>", False, True),
    ("<think>x</think> prose <answer>(1,2),(3,4)</answer>", True, True),
])
def test_parse_structure(text, has_think, has_answer):
    parsed = parse_answer(text)
    assert (parsed.has_think, parsed.has_answer) == (has_think, has_answer)
    assert (parsed.box is not None) == has_answer


def test_parse_ignores_answer_drafts_inside_think():
    parsed = parse_answer("<think>maybe <answer>(1,1),(2,2)</answer></think><answer>(5,5),(9,9)</answer>")
    assert parsed.has_think and parsed.box == (5, 5, 9, 9) and parsed.n_boxes == 1


def test_parse_never_raises_on_non_text():
    parsed = parse_answer(None)
    assert parsed.box is None and not parsed.has_answer and parsed.error


def test_format_answer_round_trips_both_styles():
    for style in ("paren", "bracket"):
        text = format_answer((3, 4, 50, 60), think="why", style=style)
        parsed = parse_answer(text)
        assert parsed.box == (3, 4, 50, 60) and parsed.has_think and parsed.think == "why"
    assert format_answer((1, 2, 3, 4)) == "<think></think><answer>(1,2),(3,4)</answer>"
    with pytest.raises(ValueError):
        format_answer((1.5, 2, 3, 4))
    with pytest.raises(ConfigError):
        format_answer((1, 2, 3, 4), style="json")


# ------------------------------------------------------------------------------------ geometry
def test_box_iou_hand_values():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((100, 100, 200, 200), (110, 110, 210, 210)) == pytest.approx(8100 / 11900)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges do not overlap
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0


@pytest.mark.parametrize("other", [None, ZERO_BOX, (5, 5, 5, 9), (9, 9, 3, 3)])
def test_box_iou_is_zero_for_degenerate(other):
    assert box_iou((0, 0, 10, 10), other) == 0.0
    assert box_iou(other, other) == 0.0


def test_area_center_diagonal_clip():
    assert box_area((1, 2, 4, 6)) == 12
    assert box_center((1, 2, 4, 6)) == (2.5, 4.0)
    assert box_diagonal((1, 2, 4, 6)) == 5.0
    assert clip_box((-5, 3, 120, 90), (80, 100)) == (0.0, 3.0, 100.0, 80.0)
    assert is_degenerate(ZERO_BOX) and not is_degenerate((0, 0, 1, 1))


# ------------------------------------------------------------------------- coordinate modes
def test_qwen25_resize_hand_values():
    assert qwen25_resized_hw(512, 512) == (504, 504)  # 512/28 = 18.3 -> 18 * 28
    assert qwen25_resized_hw(1024, 768) == (1036, 756)  # 36.6 -> 37, 27.4 -> 27
    assert qwen25_resized_hw(20, 30) == (56, 84)  # too small: scaled by sqrt(3136/600) then ceiled
    h, w = qwen25_resized_hw(3000, 4000, max_pixels=1000 * 1000)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 1000 * 1000
    assert (h, w) == (840, 1148)  # beta = sqrt(12); 866.0 -> 30*28, 1154.7 -> 41*28
    with pytest.raises(DataError):
        qwen25_resized_hw(10, 4000)


def test_relative1000_hand_values():
    assert to_policy_coords((100, 100, 200, 200), "relative1000", (512, 512)) == (195, 195, 391, 391)
    assert to_policy_coords((0, 0, 640, 480), CoordinateMode.RELATIVE_1000, (480, 640)) == (0, 0, 1000, 1000)


def test_resized_mode_uses_given_or_default_resize():
    assert to_policy_coords((100, 100, 200, 200), "resized", (512, 512)) == (98, 98, 197, 197)
    assert to_policy_coords((100, 50, 200, 150), "resized", (400, 800), resized_hw=(200, 400)) == (50, 25, 100, 75)
    assert to_pixels((50, 25, 100, 75), "resized", (400, 800), resized_hw=(200, 400)) == (100, 50, 200, 150)


@pytest.mark.parametrize("mode", list(CoordinateMode))
@pytest.mark.parametrize("hw", [(512, 512), (300, 900), (1024, 768)])
def test_round_trip_error_is_below_one_frame_unit(mode, hw):
    h, w = hw
    box = (0.13 * w, 0.41 * h, 0.57 * w, 0.93 * h)
    back = to_pixels(to_policy_coords(box, mode, hw), mode, hw)
    frame_h, frame_w = {"pixels": (h, w), "relative1000": (1000, 1000), "resized": qwen25_resized_hw(h, w)}[mode.value]
    unit_x, unit_y = w / frame_w, h / frame_h  # one policy coordinate in original pixels
    units = (unit_x, unit_y, unit_x, unit_y)
    assert all(abs(a - b) <= u / 2 + 1e-9 for a, b, u in zip(box, back, units))


def test_zero_box_stays_zero_and_tiny_boxes_stay_real():
    for mode in CoordinateMode:
        assert to_policy_coords(ZERO_BOX, mode, (512, 512)) == (0, 0, 0, 0)
        assert to_pixels(ZERO_BOX, mode, (512, 512)) == ZERO_BOX
    tiny = to_policy_coords((3, 3, 3.2, 3.2), "relative1000", (4000, 4000))
    assert tiny[2] > tiny[0] and tiny[3] > tiny[1] and not is_zero_box(tiny)
    at_edge = to_policy_coords((3999.8, 0, 4000, 1), "relative1000", (4000, 4000))
    assert at_edge[2] == 1000 and at_edge[0] == 999


def test_to_pixels_clips_out_of_frame_predictions():
    assert to_pixels((900, 0, 1100, 500), "relative1000", (100, 200)) == (180.0, 0.0, 200.0, 50.0)


def test_bad_mode_and_outside_box_are_user_errors():
    with pytest.raises(ConfigError, match="relative1000"):
        coordinate_mode("rel")
    with pytest.raises(DataError, match="outside"):
        to_policy_coords((600, 0, 700, 10), "pixels", (512, 512))


# ------------------------------------------------------------------------------- mask_to_box
def test_mask_to_box_pixel_convention_and_largest_component():
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2, 3] = 1  # single pixel: (3, 2, 4, 3)
    assert mask_to_box(mask) == (3, 2, 4, 3)
    mask[10:15, 20:28] = 255  # the larger blob wins
    assert mask_to_box(mask, "largest") == (20, 10, 28, 15)
    assert mask_to_box(mask, "whole") == (3, 2, 28, 15)


def test_mask_to_box_connectivity():
    mask = np.zeros((10, 10), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # a diagonal: one component with 8-connectivity
    mask[6:8, 6] = True  # a vertical pair: the largest with 4-connectivity
    assert mask_to_box(mask, connectivity=8) == (1, 1, 4, 4)
    assert mask_to_box(mask, connectivity=4) == (6, 6, 7, 8)


def test_mask_to_box_empty_and_bad_input():
    assert mask_to_box(np.zeros((8, 8))) == ZERO_BOX
    assert mask_to_box(np.ones((4, 5, 1))) == (0, 0, 5, 4)
    with pytest.raises(DataError):
        mask_to_box(np.ones((2, 3, 4)))
    with pytest.raises(ConfigError):
        mask_to_box(np.ones((4, 4)), mode="biggest")


def test_mask_to_boxes_lists_every_component_largest_first():
    from rlad.boxes import mask_to_boxes

    mask = np.zeros((10, 12), bool)
    mask[1:3, 1:3] = True  # 4 pixels
    mask[5:9, 6:11] = True  # 20 pixels
    mask[0, 11] = True  # 1 pixel
    assert mask_to_boxes(mask) == [(6, 5, 11, 9), (1, 1, 3, 3), (11, 0, 12, 1)]
    assert mask_to_boxes(mask, min_area=2) == [(6, 5, 11, 9), (1, 1, 3, 3)]
    assert mask_to_boxes(np.zeros((4, 4))) == []
