"""The compact grounder (rlad.policies.compact): tokens, text, log-probs, learning, persistence."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rlad.boxes import parse_answer
from rlad.errors import ConfigError
from rlad.policies.base import policy_from_payload
from rlad.policies.compact import (CompactConfig, CompactPolicy, WarmStartConfig, box_to_tokens, comparison_maps,
                                   fit_supervised, render, supervised_step, tokens_to_box)
from rlad.rl.loop import GRPOConfig, train_grpo
from rlad.rl.rewards import PairTarget, dclr_reward, format_reward

SIZE = 64


def small_config(**changes) -> CompactConfig:
    return CompactConfig(image_size=SIZE, width=16, project=8, bins=16, **changes)


def make_policy(**changes) -> CompactPolicy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random trunk warning: expected in tests
        return CompactPolicy(small_config(**changes))


# ------------------------------------------------------------------------------------ tokens
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
    assert dclr_reward(text, PairTarget(box=(250, 500, 500, 750))) == pytest.approx(1.0)


# --------------------------------------------------------------------------- comparison maps
def test_comparison_maps_light_up_where_the_query_differs():
    torch.manual_seed(0)
    reference = [torch.randn(8, 16, 16), torch.randn(4, 8, 8)]
    same = comparison_maps(reference, reference, grid=16)
    assert same.shape == (8, 16, 16)
    assert same[[0, 2, 4, 6]].abs().max() < 1e-4  # raw distances of identical images are zero
    query = [r.clone() for r in reference]
    query[0][:, 2:6, 10:14] = torch.randn(8, 4, 4) * 3
    changed = comparison_maps(query, reference, grid=16)
    inside, outside = changed[0, 2:6, 10:14].mean(), changed[0, 8:, :8].mean()
    assert inside > 0.3 and outside < 1e-4
    assert changed[2, 2:6, 10:14].mean() > changed[2, 8:, :8].mean()  # nearest-neighbour distance too


def test_nearest_neighbour_distance_ignores_a_shift():
    torch.manual_seed(1)
    reference = [torch.randn(16, 12, 12)]
    shifted = [torch.roll(reference[0], shifts=3, dims=2)]
    maps = comparison_maps(shifted, reference, grid=12)
    assert maps[0].mean() > 0.5  # aligned: everything looks different
    assert maps[2][:, 3:].abs().max() < 1e-4  # nearest neighbour: the shifted content is found


# ------------------------------------------------------------------------------- sampling
def test_samples_are_valid_boxes_and_log_probs_match(square_pairs):
    policy = make_policy()
    groups = policy.sample(square_pairs[:3], 5, generator=torch.Generator().manual_seed(0))
    assert [len(g) for g in groups] == [5, 5, 5]
    for c in (c for g in groups for c in g):
        parsed = parse_answer(c.text)
        assert parsed.box is not None and format_reward(c.text) == 1.0
        assert len(c.token_ids) in (1, 5)
        if len(c.token_ids) == 5:
            _, x1, x2, y1, y2 = c.token_ids
            assert 0 <= x1 <= x2 < 16 and 0 <= y1 <= y2 < 16
    out = policy.log_probs(square_pairs[:3], groups)
    assert out.logp.shape == out.mask.shape == (15, 5)
    sampled = torch.zeros(15, 5)
    for i, c in enumerate(c for g in groups for c in g):
        sampled[i, :len(c.logprobs)] = torch.tensor(c.logprobs)
    assert torch.allclose(out.logp, sampled, atol=1e-5)
    assert (out.entropy >= 0).all() and (out.logp <= 0).all()
    loss = -(out.logp * out.mask).sum()
    loss.backward()
    grads = [p.grad for p in policy.trainable_parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_sampling_is_reproducible_and_greedy_is_deterministic(square_pairs):
    policy = make_policy()
    a = policy.sample(square_pairs[:4], 3, generator=torch.Generator().manual_seed(7))
    b = policy.sample(square_pairs[:4], 3, generator=torch.Generator().manual_seed(7))
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    greedy = policy.sample(square_pairs[:4], 3, greedy=True)
    assert all(len({tuple(c.token_ids) for c in g}) == 1 for g in greedy)


def test_save_load_round_trip_gives_the_same_answers(square_pairs, tmp_path):
    policy = make_policy()
    fit_supervised(policy, square_pairs, WarmStartConfig(epochs=2, batch_size=8))
    payload = policy.save_payload()
    torch.save(payload, tmp_path / "model.pt")
    again = policy_from_payload(torch.load(tmp_path / "model.pt", weights_only=False))
    assert [c.text for c in again.predict(square_pairs)] == [c.text for c in policy.predict(square_pairs)]
    assert payload["method"] == "compact" and payload["policy"] == "compact"


def test_frozen_copy_does_not_follow_training(square_pairs):
    policy = make_policy()
    frozen = policy.frozen_copy()
    before = [p.clone() for p in frozen.head.parameters()]
    fit_supervised(policy, square_pairs[:8], WarmStartConfig(epochs=1, batch_size=8))
    assert all(torch.equal(b, p) for b, p in zip(before, frozen.head.parameters()))
    assert frozen.trainable_parameters() == []
    assert any(not torch.equal(a, b) for a, b in zip(policy.head.parameters(), frozen.head.parameters()))


def test_supervised_warm_start_learns_the_squares(square_pairs):
    from rlad.policies.api import grounding_report, predict_boxes

    policy = make_policy(seed=1)
    start = supervised_step(policy, square_pairs).item()
    history = fit_supervised(policy, square_pairs, WarmStartConfig(epochs=40, batch_size=16, lr=3e-3), seed=1)
    assert history[-1]["loss"] < 0.5 * start
    boxes, _ = predict_boxes(policy, square_pairs)
    metrics = grounding_report(boxes, square_pairs)
    assert metrics["acc_at_0_3"] >= 0.75, metrics


def test_grpo_reward_rises_for_the_compact_grounder(square_pairs):
    """The CI check of the issue: a few GRPO steps on a generated pair set, reward goes up."""
    policy = make_policy(seed=2)
    fit_supervised(policy, square_pairs, WarmStartConfig(epochs=3, batch_size=16, lr=3e-3), seed=2)
    log = []
    train_grpo(policy, square_pairs, GRPOConfig(steps=40, group_size=8, prompts_per_step=8, lr=3e-3, seed=2),
               callback=log.append)
    first = np.mean([line["reward/dclr"] for line in log[:5]])
    last = np.mean([line["reward/dclr"] for line in log[-5:]])
    assert last > first + 0.1, (first, last)
    assert all(line["reward/format"] == 1.0 for line in log)


@pytest.mark.parametrize("change, message", [({"image_size": 60}, "image_size"), ({"bins": 1}, "bins"),
                                             ({"temperature": 0}, "temperature"), ({"stages": [9]}, "stages")])
def test_config_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        CompactConfig(**change).validate()


@pytest.mark.realdata
def test_imagenet_trunk_loads_when_present():
    weights = Path(__file__).resolve().parents[2].parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} not found")
    policy = CompactPolicy(CompactConfig(image_size=64, weights=str(weights)))
    assert policy.extractor.channels == [24, 32, 96]
