"""rlad's own GRPO loop (rl.loop.train_grpo, unchanged) running the VLM policy: resampling and difficulty
weights active, an exact resume after a kill, and a toy case the policy learns."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlad.engine import RunDir
from rlad.policies.hf_vlm.config import HFVLMConfig
from rlad.policies.hf_vlm.policy import HFVLMPolicy
from rlad.rl.loop import GRPOConfig, train_grpo
from rlad.tasks.grounding import GroundingTask

ALL_WRONG_WEIGHT = (torch.e + 2 ** 0.5) / 2  # the difficulty weight of a group whose answers all score 0


def same_region(records, box=(4, 4, 28, 28)):
    """The pairs with one fixed target box: a policy can learn to answer it without reading the images."""
    return [dataclasses.replace(r, box=box, defect_type="square") for r in records]


def test_three_steps_regenerate_invalid_groups_and_weight_them(tiny_vlm, square_pairs):
    policy = HFVLMPolicy(HFVLMConfig(model=str(tiny_vlm("qwen2_5_vl")), max_new_tokens=12))
    calls = []
    sample = policy.sample
    policy.sample = lambda prompts, n, **kw: calls.append(len(prompts)) or sample(prompts, n, **kw)
    lines = []
    cfg = GRPOConfig(steps=3, group_size=2, prompts_per_step=2, rounds=1, checkpoint_every=100)
    summary = train_grpo(policy, GroundingTask(), same_region(square_pairs[:4]), cfg, callback=lines.append)
    # A random model never writes a box: every group is invalid, is sampled again once, and weighs the most.
    assert calls == [2, 2] * 3
    assert [line["groups_resampled"] for line in lines] == [2, 2, 2]
    assert all(line["difficulty_weight"] == pytest.approx(ALL_WRONG_WEIGHT) for line in lines)
    assert summary["completions_scored"] == 3 * (2 * 2 + 2 * 2)


def _trainable(policy):
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}


def test_a_killed_run_resumes_to_the_same_policy(warm_run, square_pairs, tmp_path):
    from rlad.workflows.grounding import load_policy

    task, records = GroundingTask(), same_region(square_pairs)
    cfg = GRPOConfig(steps=3, group_size=2, prompts_per_step=2, lr=1e-3, checkpoint_every=1, seed=3)
    straight = load_policy(warm_run)
    start = _trainable(straight)
    train_grpo(straight, task, records, cfg, run=RunDir(tmp_path / "a").create())

    def kill_after_two(line):
        if line["step"] == 2:
            raise KeyboardInterrupt

    run = RunDir(tmp_path / "b").create()
    with pytest.raises(KeyboardInterrupt):
        train_grpo(load_policy(warm_run), task, records, cfg, run=run, callback=kill_after_two)
    resumed = load_policy(warm_run)
    train_grpo(resumed, task, records, cfg, run=run)
    # step 2 was logged, then killed before its checkpoint: the rerun starts after step 1
    assert [line["step"] for line in run.read_log()] == [1, 2, 2, 3]
    after, expected = _trainable(resumed), _trainable(straight)
    assert any((expected[n] - start[n]).abs().max() > 0 for n in expected)  # the steps did train
    for name in expected:
        assert torch.allclose(after[name], expected[name], atol=1e-6), name


def test_the_reward_rises_on_a_learnable_toy(warm_run, square_pairs):
    from rlad.workflows.grounding import load_policy

    lines = []
    # Resampling off: each step then generates once (generation is most of a step's cost on a CPU); the
    # larger batch gives every step a clearer signal than more, smaller steps would for the same completions.
    cfg = GRPOConfig(steps=12, group_size=4, prompts_per_step=8, lr=1e-3, beta=0.0, resampling=False,
                     checkpoint_every=1000)
    train_grpo(load_policy(warm_run), GroundingTask(), same_region(square_pairs), cfg, callback=lines.append)
    dclr = [line["reward/dclr"] for line in lines]
    first, last = sum(dclr[:3]) / 3, sum(dclr[-3:]) / 3
    assert last > first + 0.25, dclr  # measured here: 0.30 -> 0.82
