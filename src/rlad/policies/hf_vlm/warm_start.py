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

import numpy as np
import torch

from rlad.config import raise_if_problems
from rlad.engine import TrainingState, progress
from rlad.errors import ConfigError
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
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    state = TrainingState(run, "warm_start", policy=policy, optimizer=optimizer, rng=rng)
    resumed = state.restore()
    start_epoch, history = resumed.get("epoch", 0), resumed.get("history", [])
    bar = progress(total=cfg.epochs, initial=start_epoch, desc="warm start")
    policy.train(True)
    for epoch in range(start_epoch, cfg.epochs):
        order = rng.permutation(len(prompts))
        total, count = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            loss = supervised_loss(policy, [prompts[i] for i in batch], [texts[i] for i in batch])
            optimizer.zero_grad()
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), cfg.max_grad_norm)
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
        history.append({"epoch": epoch + 1, "loss": total / count})
        bar.update(1)
        bar.set_postfix(loss=f"{total / count:.3f}")
        if run is not None:
            run.log({"stage": "warm_start", **history[-1]})
        if (epoch + 1) % cfg.checkpoint_every == 0 and epoch + 1 < cfg.epochs:
            state.save(epoch + 1, epoch=epoch + 1, history=history)
    bar.close()
    policy.train(False)
    return history
