import json

import pytest

from rlad.boxes import format_answer
from rlad.errors import ConfigError, DataError
from rlad.rl.rewards import (LOCALIZATION_REWARDS, REWARDS, RewardTarget, as_trl_reward, as_verl_compute_score,
                             choice_reward, completion_text, dclr_from_boxes, dclr_reward, extract_choice,
                             format_reward, get_reward, iou_from_boxes, iou_reward, roam_reward)

G = (100, 100, 200, 200)
ZERO = (0, 0, 0, 0)


def box_text(box, think="look"):
    return format_answer(box, think=think)


def choice_text(think, answer):
    return f"<think>{think}</think><answer>{answer}</answer>"


# -------------------------------------------------------------------------------------- format
@pytest.mark.parametrize("text, expected", [
    ("<think>a</think><answer>(1,2),(3,4)</answer>", 1.0),
    ("<think>a</think>\n<answer>[1, 2, 3, 4]</answer>", 1.0),
    ("<think>a</think><answer>(0,0),(0,0)</answer>", 1.0),
    ("<answer>(1,2),(3,4)</answer>", 0.0),                              # no think
    ("<think>a</think><answer>(1,2),(3,4) (5,6),(7,8)</answer>", 0.0),  # two boxes
    ("<think>a</think><answer>(1.5,2),(3,4)</answer>", 0.0),            # not integers
    ("<think>a</think><answer>(-1,2),(3,4)</answer>", 0.0),             # negative
    ("<think>a</think><answer>nothing here</answer>", 0.0),
    ("<answer>(1,2),(3,4)</answer><think>a</think>", 0.0),              # wrong order
])
def test_format_reward(text, expected):
    assert format_reward(text) == expected
    assert format_reward(text, RewardTarget(box=G)) == expected


# ---------------------------------------------------------------------------------------- DCLR
@pytest.mark.parametrize("pred, expected", [
    (G, 1.0),
    ((110, 110, 210, 210), 0.9808),  # IoU 0.6807
    ((120, 120, 160, 160), 0.6674),  # IoU 0.16
    ((300, 300, 400, 400), 0.40),    # far away, right size: area term only
    ((0, 0, 1000, 1000), 0.396),     # whole image
])
def test_dclr_methods_test_vectors(pred, expected):
    assert dclr_from_boxes(pred, G) == pytest.approx(expected, abs=5e-4)
    assert dclr_reward(box_text(pred), RewardTarget(box=G)) == pytest.approx(expected, abs=5e-4)


def test_dclr_normal_and_missing_cases():
    assert dclr_from_boxes(ZERO, ZERO) == 1.0
    assert dclr_from_boxes(G, ZERO) == 0.0
    assert dclr_from_boxes(None, ZERO) == 0.0
    assert dclr_from_boxes(None, G) == 0.0
    assert dclr_from_boxes(ZERO, G) == 0.0
    assert dclr_reward("I think it is fine", RewardTarget(box=ZERO)) == 0.0
    assert dclr_reward("<answer>(0,0),(0,0)</answer>", RewardTarget(box=ZERO)) == 1.0


def test_dclr_has_signal_when_iou_is_zero():
    near = dclr_from_boxes((210, 100, 310, 200), G)  # adjacent, same size
    far = dclr_from_boxes((600, 600, 700, 700), G)
    assert 0.4 < near < 1.0 and far == pytest.approx(0.4)
    assert near > far


def test_dclr_degenerate_ground_truth_earns_nothing():
    assert dclr_from_boxes((5, 5, 9, 9), (5, 5, 5, 9)) == 0.0


# ----------------------------------------------------------------------------------------- IoU
def test_iou_reward_hand_values():
    t = RewardTarget(box=G)
    assert iou_reward(box_text(G), t) == 1.0
    # IoU 0.16 < 0.3: times 1 / (1 + |1600 - 10000| / 10000) = 1 / 1.84
    assert iou_reward(box_text((120, 120, 160, 160)), t) == pytest.approx(0.16 / 1.84)
    # IoU 0.5 >= 0.3: unchanged
    assert iou_from_boxes((100, 100, 200, 150), G) == pytest.approx(0.5)
    assert iou_from_boxes((300, 300, 400, 400), G) == 0.0
    assert iou_from_boxes(ZERO, ZERO) == 1.0 and iou_from_boxes(G, ZERO) == 0.0


def test_box_rewards_need_a_box_target():
    for reward in (dclr_reward, iou_reward):
        with pytest.raises(DataError, match="ground-truth box"):
            reward(box_text(G), RewardTarget(choice="A"))


# -------------------------------------------------------------------------------------- letters
@pytest.mark.parametrize("text, expected", [
    ("B", "B"),
    ("  (C)  ", "C"),
    ("The answer is D.", "D"),
    ("Option B) looks right", "B"),
    ("A scratch is visible near the edge.", None),          # the article is not a choice
    ("A crack. So the answer is A.", "A"),
    ("A hole, so the answer is\nC\n", "C"),
    ("Between A) and C) I pick C.", "C"),                   # last one wins
    ("Answer: B", "B"),                                     # end of line
    ("the U.S.A. standard", None),                          # glued letters are not choices
    ("", None),
])
def test_extract_choice_is_strict(text, expected):
    assert extract_choice(text) == expected


def test_choice_reward():
    t = RewardTarget(choice="B")
    assert choice_reward(choice_text("it is scratched", "B"), t) == 1.0
    assert choice_reward(choice_text("it is scratched", "(b)".upper()), t) == 1.0
    assert choice_reward(choice_text("x", "C"), t) == 0.0
    assert choice_reward("<answer>B</answer>", t) == 0.0                   # no think block
    assert choice_reward(choice_text("x", "A) or B)"), t) == 0.0           # listing options never pays
    assert choice_reward(choice_text("x", "A scratch, so B"), t) == 1.0    # the article is not a letter
    assert choice_reward(choice_text("x", "B"), RewardTarget(choice="b.")) == 1.0
    with pytest.raises(DataError, match="letter"):
        choice_reward(choice_text("x", "B"), RewardTarget(box=G))


@pytest.mark.parametrize("think, answer, expected", [
    ("so the answer is B.", "B", 1.0),         # both right
    ("a scratch is visible", "B", 0.8),        # no letter in reasoning, right answer
    ("A scratch is visible", "B", 0.8),        # the article does not count as reasoning letter A
    ("a scratch is visible", "C", 0.05),       # no letter in reasoning, wrong answer
    ("so the answer is C.", "C", 0.1),         # consistent but wrong
    ("so the answer is C.", "B", 0.0),         # right answer contradicting its reasoning
    ("so the answer is B.", "C", 0.0),         # right reasoning, wrong answer
    ("so the answer is B.", "none", 0.0),      # no answer letter
])
def test_roam_table(think, answer, expected):
    assert roam_reward(choice_text(think, answer), RewardTarget(choice="B")) == expected


def test_roam_needs_structure():
    assert roam_reward("so the answer is B. <answer>B</answer>", RewardTarget(choice="B")) == 0.0


# ------------------------------------------------------------------------------------- registry
def test_registry():
    assert set(REWARDS) == {"format", "dclr", "iou", "choice_format", "choice", "roam"}
    assert LOCALIZATION_REWARDS <= set(REWARDS)
    assert get_reward("dclr") is dclr_reward
    with pytest.raises(ConfigError, match="dclr, format, iou"):
        get_reward("giou")


# ------------------------------------------------------------------------------------- adapters
def test_completion_text_forms():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": "y"}]) == "y"
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert completion_text(parts) == "ab"
    with pytest.raises(DataError):
        completion_text(42)


def test_as_trl_reward_plain_and_conversational():
    fn = as_trl_reward("dclr")
    assert fn.__name__ == "dclr_reward"
    texts = [box_text(G), box_text((300, 300, 400, 400)), box_text(ZERO)]
    boxes = [list(G), list(G), [0, 0, 0, 0]]
    # TRL passes extra columns the reward does not use; they must be ignored.
    out = fn(texts, box=boxes, prompts=["p"] * 3, images=[None] * 3, trainer_state=None)
    assert out == pytest.approx([1.0, 0.4, 1.0])
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    assert fn(conversational, box=boxes) == pytest.approx(out)


def test_as_trl_reward_custom_columns_and_choice():
    fn = as_trl_reward(choice_reward, target_columns={"choice": "solution"})
    assert fn([choice_text("x", "B"), choice_text("x", "A")], solution=["B", "B"]) == [1.0, 0.0]
    with pytest.raises(ConfigError):
        as_trl_reward("dclr", target_columns={"bbox": "box"})
    with pytest.raises(DataError, match="2 values for 1"):
        as_trl_reward("dclr")([box_text(G)], box=[G, G])


def test_as_verl_compute_score_sums_rewards_and_reads_ground_truth_forms():
    score = as_verl_compute_score(["format", "dclr"])
    text = box_text((110, 110, 210, 210))
    expected = 1.0 + dclr_from_boxes((110, 110, 210, 210), G)
    assert score("pairs", text, {"box": list(G)}) == pytest.approx(expected)
    assert score("pairs", text, json.dumps({"box": list(G)}), extra_info={"split": "train"}) == pytest.approx(expected)
    assert score("pairs", text, list(G)) == pytest.approx(expected)
    choice = as_verl_compute_score("choice")
    assert choice("mmad", choice_text("x", "C"), "C") == 1.0
    with pytest.raises(ConfigError):
        as_verl_compute_score(["format", "giou"])
    with pytest.raises(DataError):
        score("pairs", text, "{not json")
