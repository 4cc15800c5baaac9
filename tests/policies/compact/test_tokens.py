"""Box <-> token sequence and the rendered answer (rlad.policies.compact.tokens)."""

from __future__ import annotations

import pytest

from rlad.boxes import parse_answer
from rlad.policies.compact.tokens import box_to_tokens, render, tokens_to_box
from rlad.rl.rewards import RewardTarget, dclr_reward, format_reward


@pytest.mark.parametrize("box", [(0, 0, 1000, 1000), (120, 333, 480, 999), (5, 5, 6, 6), (990, 0, 1000, 20)])
def test_tokens_cover_the_box_within_one_bin(box):
    bins = 32
    tokens = box_to_tokens(box, bins)
    assert tokens[0] == 1 and tokens[1] <= tokens[2] and tokens[3] <= tokens[4]
    x1, y1, x2, y2 = tokens_to_box(tokens, bins)
    step = 1000 / bins
    assert x1 <= box[0] < x1 + step and y1 <= box[1] < y1 + step
    assert x2 - step < box[2] <= x2 and y2 - step < box[3] <= y2


def test_zero_box_is_one_token_and_renders_as_the_zero_answer():
    assert box_to_tokens((0, 0, 0, 0), 16) == [0]
    text = render([0], 16)
    assert parse_answer(text).box == (0, 0, 0, 0)
    assert format_reward(text) == 1.0


def test_rendered_text_earns_full_rewards_for_the_right_box():
    tokens = box_to_tokens((250, 500, 500, 750), 16)
    text = render(tokens, 16)
    assert text.startswith("<think>") and "</think><answer>(250,500),(500,750)</answer>" in text
    assert format_reward(text) == 1.0
    assert dclr_reward(text, RewardTarget(box=(250, 500, 500, 750))) == pytest.approx(1.0)
