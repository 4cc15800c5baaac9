"""The VLM's supervised warm start (the paper's cold start): teacher-forced cross-entropy of the
ground-truth answers written in the task's format and the policy's coordinates, before GRPO.

A random or general-purpose checkpoint rarely writes `<think>..</think><answer>(x1,y1),(x2,y2)</answer>`
in the right coordinate convention; without that, every group of GRPO samples scores the same and
carries no signal. The teacher tokens are scored with the policy's own `log_probs`, so the warm
start trains exactly the distribution GRPO later samples from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rlad.config import raise_if_problems
from rlad.errors import ConfigError
from rlad.policies.warm_start import warm_start_epochs
from rlad.rl.rollout import Completion, Prompt


@dataclass
class HFWarmStartConfig:
    epochs: int = 3
    batch_size: int = 8
    lr: float = 1e-4
    """The step for LoRA adapters; full fine-tuning of a large model wants ~1e-5 or less."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    checkpoint_every: int = 1
    """Epochs between checkpoints (a killed fit resumes from the last one)."""

    def validate(self) -> "HFWarmStartConfig":
        raise_if_problems([
            None if self.epochs >= 0 else f"train.epochs must be >= 0, got {self.epochs}",
            None if self.batch_size >= 1 else f"train.batch_size must be >= 1, got {self.batch_size}",
            None if self.lr > 0 else f"train.lr must be > 0, got {self.lr}",
            None if self.max_grad_norm >= 0 else f"train.max_grad_norm must be >= 0, got {self.max_grad_norm}",
            None if self.checkpoint_every >= 1 else f"train.checkpoint_every must be >= 1, got {self.checkpoint_every}",
        ])
        return self


def teacher_completions(policy, texts: Sequence[str]) -> list[list[Completion]]:
    """Each answer text as a one-completion group: its tokens plus the end-of-turn token."""
    end = policy.eos_ids[0]
    groups = []
    for text in texts:
        ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"] + [end]
        groups.append([Completion(text, ids, [0.0] * len(ids))])
    return groups


def supervised_loss(policy, prompts: Sequence[Prompt], texts: Sequence[str]) -> torch.Tensor:
    """Token-mean cross-entropy of the teacher answers."""
    out = policy.log_probs(prompts, teacher_completions(policy, texts))
    return -(out.logp * out.mask).sum() / out.mask.sum().clamp(min=1.0)


def fit_supervised(policy, prompts: Sequence[Prompt], texts: Sequence[str], cfg: HFWarmStartConfig, seed: int = 0,
                   run=None) -> list[dict]:
    """The warm start on (prompt, answer text) pairs. Resumes from `run`'s last warm-start checkpoint."""
    if not prompts:
        raise ConfigError("the warm start needs at least one pair")
    policy.train(True)
    history = warm_start_epochs(
        policy, len(prompts), lambda batch: supervised_loss(policy, [prompts[i] for i in batch], [texts[i] for i in batch]),
        cfg, seed=seed, run=run, max_grad_norm=cfg.max_grad_norm)
    policy.train(False)
    return history
