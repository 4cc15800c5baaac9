"""The Policy contract (docs/architecture.md, docs/grounding.md): what the GRPO loop, the evaluators and the CLI need
from any policy, whatever the task.

A policy reads `Prompt`s (images + text, written by a task) and writes completions: text in the
task's answer format, with the token ids it sampled and their log-probabilities. Everything else
in GRPO (rewards, advantages, difficulty weights, resampling, the clipped loss, KL) is
policy-agnostic code in `rlad.rl`. Answers with boxes use the policy's own `coordinate_mode`; the
task converts ground truth into it and answers back (`rlad.tasks.grounding`).

Each policy class brings its own typed config dataclass (`Config`, with `validate()`), so runs and
the CLI know a policy by its registered name alone (`rlad.policies.registry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import torch

from rlad.boxes import CoordinateMode
from rlad.rl.rollout import Completion, Prompt, TokenLogProbs


class Policy(ABC):
    name: ClassVar[str]
    Config: ClassVar[type]
    tasks: ClassVar[frozenset[str]] = frozenset({"grounding"})
    """The tasks this policy can answer (the compact grounder writes boxes only)."""
    coordinate_mode: CoordinateMode = CoordinateMode.RELATIVE_1000

    # --- generation -------------------------------------------------------------------------------
    @abstractmethod
    def sample(self, prompts: Sequence[Prompt], n: int, generator: torch.Generator | None = None,
               greedy: bool = False) -> list[list[Completion]]:
        """n completions per prompt (temperature sampling; `greedy` gives the argmax answer, n times)."""

    @abstractmethod
    def log_probs(self, prompts: Sequence[Prompt], groups: Sequence[Sequence[Completion]]) -> TokenLogProbs:
        """Log-probs of the given completions' tokens; gradients flow to `trainable_parameters()`."""

    @abstractmethod
    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...

    @abstractmethod
    def frozen_copy(self) -> "Policy":
        """A copy that will not change when this policy trains: the KL reference."""

    # --- persistence --------------------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    @abstractmethod
    def config_dict(self) -> dict:
        """Everything needed to rebuild the policy before `load_state_dict` (goes to config.yaml)."""

    @classmethod
    def from_payload(cls, payload: dict) -> "Policy":
        """Rebuild from what `save_payload` returned."""
        raise NotImplementedError

    def save_payload(self) -> dict:
        return {"method": self.name, "policy": self.name, "config": self.config_dict(), "state": self.state_dict()}

    def prepare(self, prompts: Sequence[Prompt]) -> None:
        """Optional: precompute whatever per-image work can be cached (called once before training)."""

    def train(self, mode: bool = True) -> "Policy":
        return self

    # --- coordinates ----------------------------------------------------------------------------------
    def resized_hw(self, size_hw: tuple[int, int]) -> tuple[int, int] | None:
        """The model-input size of an image of `size_hw`, for CoordinateMode.RESIZED policies."""
        return None

    def predict(self, prompts: Sequence[Prompt], batch_size: int = 64) -> list[Completion]:
        """The greedy completion of each prompt."""
        out: list[Completion] = []
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                out += [g[0] for g in self.sample(prompts[start:start + batch_size], 1, greedy=True)]
        return out

