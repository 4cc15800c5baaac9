"""The GRPO loop (DifferAD-R1's recipe) for any task and any policy, top to bottom in `train_grpo`.

The task (`rlad.tasks`) turns records into prompts and reward targets and names its primary
rewards (localization for grounding); the policy (`rlad.policies`) samples and scores completions.
The loop sees them only through those interfaces, so it never knows which task or policy it runs.

One step:
  1. take `prompts_per_step` records; the policy samples G completions for each prompt (a group);
  2. score every completion with the configured rewards (text + target in the policy's
     conventions; the rewards never see the model);
  3. difficulty weight per group from the primary rewards of these first samples;
  4. group-wise resampling: groups with no usable signal (primary-reward std < 1e-6 and no perfect
     answer) are sampled again, up to `rounds` times; the ones still invalid get advantage 0;
  5. group advantages of the total reward (e.g. format + localization);
  6. `mu` updates of the clipped surrogate + beta * k3-KL to a frozen reference policy, each
     group's loss multiplied by its difficulty weight; truncated completions are dropped;
  7. a log line; every `checkpoint_every` steps an atomic checkpoint (resume picks it up).

Everything numeric is in `rlad.rl.grpo` (pure, unit-tested); this file only wires it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from rlad.config import raise_if_problems
from rlad.engine import TrainingState, progress
from rlad.errors import ConfigError
from rlad.rl.grpo import (ADVANTAGE_SCALES, AGGREGATIONS, difficulty_weights, group_advantages, grpo_loss,
                          invalid_groups)
from rlad.rl.rewards import RewardTarget, get_reward
from rlad.rl.rollout import flatten, pad_to, padded


@dataclass
class GRPOConfig:
    steps: int = 200
    group_size: int = 8
    """G: completions per prompt."""
    prompts_per_step: int = 8
    lr: float = 3e-4
    """The paper used 1e-6 for a 7B VLM; the compact grounder's small head needs a far larger step."""
    weight_decay: float = 0.0
    beta: float = 0.04
    """KL weight to the frozen reference policy (0 = no reference kept)."""
    eps_low: float = 0.2
    eps_high: float = 0.2
    mu: int = 1
    """Policy updates per sampled batch (> 1 makes the ratio and the clip matter)."""
    rewards: list[str] = field(default_factory=lambda: ["format", "dclr"])
    """Summed into the total reward; the task's primary ones (for grounding the localization rewards
    dclr, iou) drive weights and resampling."""
    advantage_scale: str = "std"
    """"std" (GRPO) or "none" (Dr. GRPO)."""
    aggregation: str = "sequence"
    """"sequence" (token mean per completion, then mean: GRPO/DifferAD-R1) or "token" (DAPO)."""
    reweighting: bool = True
    """Difficulty-aware reweighting of each group's loss."""
    resampling: bool = True
    """Group-wise resampling of invalid groups."""
    rounds: int = 1
    """Resampling rounds per step (the authors intended 1)."""
    error_threshold: float = 0.3
    """Localization reward below which a completion counts as wrong for the difficulty weight."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    checkpoint_every: int = 50
    seed: int = 0

    def validate(self) -> "GRPOConfig":
        problems = [
            None if self.steps >= 0 else f"grpo.steps must be >= 0, got {self.steps}",
            None if self.group_size >= 2
            else f"grpo.group_size must be >= 2 (a group needs a spread), got {self.group_size}",
            None if self.prompts_per_step >= 1 else f"grpo.prompts_per_step must be >= 1, got {self.prompts_per_step}",
            None if self.mu >= 1 else f"grpo.mu must be >= 1, got {self.mu}",
            None if self.rounds >= 0 else f"grpo.rounds must be >= 0, got {self.rounds}",
            None if self.beta >= 0 and self.eps_low >= 0 and self.eps_high >= 0 and self.lr > 0
            else "grpo.beta, eps_low, eps_high must be >= 0 and grpo.lr > 0",
            None if self.advantage_scale in ADVANTAGE_SCALES
            else f"grpo.advantage_scale {self.advantage_scale!r} is not one of {', '.join(ADVANTAGE_SCALES)}",
            None if self.aggregation in AGGREGATIONS
            else f"grpo.aggregation {self.aggregation!r} is not one of {', '.join(AGGREGATIONS)}",
            None if self.rewards else "grpo.rewards is empty",
        ]
        for name in self.rewards:
            get_reward(name)  # ConfigError listing the valid names
        raise_if_problems(problems)
        return self


# --------------------------------------------------------------------------------- pure helpers
def score_groups(groups: Sequence[Sequence], targets: Sequence[RewardTarget],
                 reward_fns: Sequence[Callable]) -> torch.Tensor:
    """(B, G, R) rewards: every reward function on every completion's text."""
    return torch.tensor([[[float(fn(c.text, t)) for fn in reward_fns] for c in group]
                         for group, t in zip(groups, targets)], dtype=torch.float32)


class PromptSampler:
    """Epoch-wise shuffled prompt indices; its state goes into checkpoints."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ConfigError("GRPO needs at least one training pair")
        self.n, self.rng = n, np.random.default_rng([seed, 104729])
        self.order, self.position = self.rng.permutation(n), 0

    def next(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.position == self.n:
                self.order, self.position = self.rng.permutation(self.n), 0
            take = min(k - len(out), self.n - self.position)
            out += self.order[self.position:self.position + take].tolist()
            self.position += take
        return out

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = np.array(state["order"]), state["position"]


# ------------------------------------------------------------------------------------- the loop
def train_grpo(policy, task, records: Sequence, cfg: GRPOConfig, run=None, reference=None,
               callback: Callable[[dict], None] | None = None) -> dict:
    """Train `policy` on `task`'s `records` with GRPO; resumes from `run`'s last GRPO checkpoint.

    `reference` is the frozen KL reference (default: a frozen copy of `policy` as it is now, i.e.
    the initial policy). Returns a summary (steps, completions scored, throughput, last log line).
    """
    cfg.validate()
    task.check_rewards(cfg.rewards, needs_primary=cfg.reweighting or cfg.resampling)
    names = list(cfg.rewards)
    reward_fns = [get_reward(n) for n in names]
    primary_columns = [i for i, n in enumerate(names) if n in task.primary_rewards]
    G, B = cfg.group_size, cfg.prompts_per_step

    prompts = [task.prompt(r) for r in records]
    policy.prepare(prompts)
    if reference is None and cfg.beta > 0:
        reference = policy.frozen_copy()
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = PromptSampler(len(records), cfg.seed)
    state = TrainingState(run, "grpo", policy=policy, reference=reference, optimizer=optimizer,
                          generator=generator, sampler=sampler)
    resumed = state.restore()
    start_step, scored_before, seconds_before = (resumed.get(k, 0) for k in ("step", "scored", "seconds"))

    scored_total, line = scored_before, {}
    started = time.perf_counter()
    bar = progress(total=cfg.steps, initial=start_step, desc="grpo")
    policy.train(True)
    for step in range(start_step, cfg.steps):
        step_started = time.perf_counter()
        picked = sampler.next(B)
        batch = [prompts[i] for i in picked]
        targets = [task.target(records[i], policy) for i in picked]

        # 1-2. sample a group per prompt and score it
        groups = policy.sample(batch, G, generator=generator)
        rewards = score_groups(groups, targets, reward_fns)  # (B, G, R)
        first_rewards = rewards.clone()
        first_stats = task.rollout_stats(groups, targets)
        scored = B * G
        primary = rewards[..., primary_columns].sum(-1) if primary_columns else rewards.sum(-1)

        # 3. difficulty weights, from the first samples (before resampling), one per group
        weights = difficulty_weights(primary, cfg.error_threshold) if cfg.reweighting else torch.ones(B)
        zero_variance = float((primary.std(dim=1, unbiased=False) < 1e-6).float().mean())
        invalid = invalid_groups(primary)
        invalid_first = int(invalid.sum())

        # 4. group-wise resampling of invalid groups (same prompts), up to `rounds` times
        resampled = 0
        if cfg.resampling:
            for _ in range(cfg.rounds):
                redo = invalid.nonzero().flatten().tolist()
                if not redo:
                    break
                fresh = policy.sample([batch[i] for i in redo], G, generator=generator)
                rewards[redo] = score_groups(fresh, [targets[i] for i in redo], reward_fns)
                for j, i in enumerate(redo):
                    groups[i] = fresh[j]
                scored += len(redo) * G
                resampled += len(redo)
                primary = rewards[..., primary_columns].sum(-1)
                invalid = invalid_groups(primary)

        # 5. advantages of the total reward; still-invalid groups carry no signal
        advantages = group_advantages(rewards.sum(-1), cfg.advantage_scale)
        if cfg.resampling:
            advantages[invalid] = 0.0

        # 6. mu updates against fixed old and reference log-probs
        completions = flatten(groups)
        keep = torch.tensor([not c.truncated for c in completions])
        old_logp, _ = padded([c.logprobs for c in completions])
        ref_logp = None
        if reference is not None:
            with torch.no_grad():
                ref_logp = reference.log_probs(batch, groups).logp
        for _ in range(cfg.mu):
            out = policy.log_probs(batch, groups)
            width = out.logp.shape[1]
            loss, stats = grpo_loss(
                out.logp, pad_to(old_logp, width), None if ref_logp is None else pad_to(ref_logp, width),
                advantages.flatten(), out.mask, beta=cfg.beta, eps_low=cfg.eps_low, eps_high=cfg.eps_high,
                aggregation=cfg.aggregation, sequence_weights=weights.repeat_interleave(G), keep=keep)
            optimizer.zero_grad()
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), cfg.max_grad_norm)
            optimizer.step()
        entropy = float((out.entropy.detach() * out.mask).sum() / out.mask.sum()) if out.entropy is not None else None

        # 7. log
        scored_total += scored
        elapsed = time.perf_counter() - step_started
        line = {
            "stage": "grpo", "step": step + 1,
            **{f"reward/{n}": float(first_rewards[..., i].mean()) for i, n in enumerate(names)},
            "reward/total": float(first_rewards.sum(-1).mean()),
            **first_stats,
            "frac_zero_variance": zero_variance,
            "groups_invalid": invalid_first,
            "groups_resampled": resampled,
            "groups_still_invalid": int(invalid.sum()) if cfg.resampling else invalid_first,
            "difficulty_weight": float(weights.mean()),
            "kl": stats["kl"], "entropy": entropy, "loss": stats["loss"], "policy_loss": stats["policy_loss"],
            "clip_frac_low": stats["clip_frac_low"], "clip_frac_high": stats["clip_frac_high"],
            "completions_scored": scored, "completions_per_s": scored / max(elapsed, 1e-9),
        }
        if run is not None:
            run.log(line)
        if callback is not None:
            callback(line)
        bar.update(1)
        bar.set_postfix(reward=f"{line['reward/total']:.3f}", **{k: f"{v:.3f}" for k, v in first_stats.items()})
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            state.save(step + 1, step=step + 1, scored=scored_total,
                       seconds=seconds_before + time.perf_counter() - started)
    bar.close()
    seconds = seconds_before + time.perf_counter() - started
    return {
        "steps": cfg.steps,
        "completions_scored": scored_total,
        "seconds": seconds,
        "completions_per_s": scored_total / seconds if seconds > 0 else 0.0,
        "last": line,
    }
