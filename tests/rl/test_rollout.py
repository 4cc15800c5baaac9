"""Rollout types and padding helpers (rlad.rl.rollout)."""

from __future__ import annotations

import pytest
import torch

from rlad.rl.rollout import Completion, pad_to, padded


def test_pad_to_pads_and_cuts():
    x = torch.ones(2, 1)
    assert pad_to(x, 3).tolist() == [[1, 0, 0], [1, 0, 0]]
    assert pad_to(torch.ones(2, 4), 2).shape == (2, 2)


def test_padded_right_pads_ragged_rows_and_marks_real_tokens():
    values, mask = padded([[-0.5, -1.0], [], [-2.0]])
    assert values.tolist() == [[-0.5, -1.0], [0.0, 0.0], [-2.0, 0.0]]
    assert mask.tolist() == [[1, 1], [0, 0], [1, 0]]


def test_a_completion_needs_one_log_prob_per_token():
    with pytest.raises(ValueError, match="log-probs"):
        Completion("x", [1, 2], [0.0])
