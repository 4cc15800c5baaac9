"""The compact grounder's supervised warm start (the paper's cold-start SFT analogue): teacher-forced
cross-entropy of the ground-truth answers, before GRPO."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rlad.config import raise_if_problems
from rlad.errors import ConfigError
from rlad.policies.compact.policy import CompactPolicy
from rlad.policies.compact.tokens import box_to_tokens, render
from rlad.policies.warm_start import warm_start_epochs
from rlad.rl.rewards import RewardTarget
from rlad.rl.rollout import Completion, Prompt


def teacher_completions(policy: CompactPolicy, targets: Sequence[RewardTarget]) -> list[list[Completion]]:
    """The ground-truth answer of each target as a one-completion group (for supervised training)."""
    groups = []
    for target in targets:
        ids = box_to_tokens(target.box, policy.cfg.bins)
        groups.append([Completion(render(ids, policy.cfg.bins), ids, [0.0] * len(ids))])
    return groups


@dataclass
class WarmStartConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    checkpoint_every: int = 5
    """Epochs between checkpoints (a killed fit resumes from the last one)."""

    def validate(self) -> "WarmStartConfig":
        raise_if_problems([
            None if self.epochs >= 0 else f"train.epochs must be >= 0, got {self.epochs}",
            None if self.batch_size >= 1 else f"train.batch_size must be >= 1, got {self.batch_size}",
            None if self.lr > 0 else f"train.lr must be > 0, got {self.lr}",
            None if self.checkpoint_every >= 1 else f"train.checkpoint_every must be >= 1, got {self.checkpoint_every}",
        ])
        return self


def supervised_step(policy: CompactPolicy, prompts: Sequence[Prompt], targets: Sequence[RewardTarget]) -> torch.Tensor:
    """Teacher-forced cross-entropy of the ground-truth token sequences (mean over sequences)."""
    out = policy.log_probs(prompts, teacher_completions(policy, targets))
    return -(out.logp * out.mask).sum(1).mean()


def fit_supervised(policy: CompactPolicy, task, records: Sequence, cfg: WarmStartConfig, seed: int = 0,
                   run=None) -> list[dict]:
    """The warm start on `task`'s records. Resumes from `run`'s last warm-start checkpoint."""
    if not records:
        raise ConfigError("the warm start needs at least one pair")
    prompts = [task.prompt(r) for r in records]
    targets = [task.target(r, policy) for r in records]
    policy.prepare(prompts)
    return warm_start_epochs(
        policy, len(records), lambda batch: supervised_step(policy, [prompts[i] for i in batch], [targets[i] for i in batch]),
        cfg, seed=seed, run=run)
