"""The grounding Policy contract (DESIGN.md "Policy") shared by the compact grounder and VLM backends.

A policy reads a prompt (a `PairRecord`: reference image, query image; the policy builds its own
model inputs, chat template, instruction, ...) and writes completions: text ending in
`<answer>(x1,y1),(x2,y2)</answer>` in the policy's own coordinate convention, with the token ids it
sampled and their log-probabilities. Everything else in GRPO (rewards, advantages, difficulty
weights, resampling, the clipped loss, KL) is policy-agnostic code in `rlad.rl`; rewards only ever
see the text and a `PairTarget` whose box was converted into the policy's convention by
`target_for`.

Layout: `sample(prompts, n)` returns one list of n completions per prompt (a *group*);
`log_probs(prompts, groups)` returns (N, T) tensors with N = len(prompts) * n rows, group after
group, T the longest completion (right-padded, `mask` marks real tokens).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from rlad.boxes import CoordinateMode, parse_answer, to_pixels, to_policy_coords
from rlad.data.pairs.records import PairRecord
from rlad.rl.rewards import PairTarget


@dataclass
class Completion:
    """One sampled answer: its text, the token ids behind it and their sampling-time log-probs."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    truncated: bool = False  # hit the length limit (dropped from the loss: the overlong filter)

    def __post_init__(self):
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(f"{len(self.token_ids)} token ids but {len(self.logprobs)} log-probs")


@dataclass
class TokenLogProbs:
    """Per-token log-probs of given completions under the current parameters (differentiable)."""

    logp: torch.Tensor  # (N, T), 0 at padded positions
    mask: torch.Tensor  # (N, T) float, 1 for real completion tokens
    entropy: torch.Tensor | None = None  # (N, T) entropy of the sampling distribution at each token


def flatten(groups: Sequence[Sequence[Completion]]) -> list[Completion]:
    return [c for group in groups for c in group]


def padded(values: Sequence[Sequence[float]], dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ragged rows into (N, T) values and a (N, T) mask."""
    width = max((len(v) for v in values), default=0)
    out = torch.zeros(len(values), max(width, 1), dtype=dtype)
    mask = torch.zeros(len(values), max(width, 1))
    for i, row in enumerate(values):
        if row:
            out[i, : len(row)] = torch.as_tensor(row, dtype=dtype)
            mask[i, : len(row)] = 1.0
    return out, mask


class Policy(ABC):
    """What the GRPO loop, the evaluator and the CLI need from a grounding policy."""

    name: ClassVar[str]
    coordinate_mode: CoordinateMode = CoordinateMode.RELATIVE_1000

    # --- generation -------------------------------------------------------------------------------
    @abstractmethod
    def sample(self, prompts: Sequence[PairRecord], n: int, generator: torch.Generator | None = None,
               greedy: bool = False) -> list[list[Completion]]:
        """n completions per prompt (temperature sampling; `greedy` gives the argmax answer, n times)."""

    @abstractmethod
    def log_probs(self, prompts: Sequence[PairRecord], groups: Sequence[Sequence[Completion]]) -> TokenLogProbs:
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
        return {"method": "compact" if self.name == "compact" else self.name, "policy": self.name,
                "config": self.config_dict(), "state": self.state_dict()}

    def prepare(self, prompts: Sequence[PairRecord]) -> None:
        """Optional: precompute whatever per-image work can be cached (called once before training)."""

    def train(self, mode: bool = True) -> "Policy":
        return self

    # --- coordinates ----------------------------------------------------------------------------------
    def resized_hw(self, record: PairRecord) -> tuple[int, int] | None:
        """The model-input size of the query, for CoordinateMode.RESIZED policies."""
        return None

    def target_for(self, record: PairRecord) -> PairTarget:
        """The ground truth in this policy's coordinate convention (what rewards compare with)."""
        box = to_policy_coords(record.box, self.coordinate_mode, record.query_size, self.resized_hw(record))
        return PairTarget(box=box)

    def answer_pixels(self, text: str, record: PairRecord):
        """The first valid box of a completion in the query's original pixels (None if unparsable)."""
        box = parse_answer(text).box
        if box is None:
            return None
        return to_pixels(box, self.coordinate_mode, record.query_size, self.resized_hw(record))

    def predict(self, prompts: Sequence[PairRecord], batch_size: int = 64) -> list[Completion]:
        """The greedy completion of each prompt."""
        out: list[Completion] = []
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                out += [g[0] for g in self.sample(prompts[start:start + batch_size], 1, greedy=True)]
        return out


_POLICIES = {"compact": "rlad.policies.compact:CompactPolicy"}


def policy_class(name: str) -> type[Policy]:
    import importlib

    from rlad.errors import ConfigError

    if name not in _POLICIES:
        raise ConfigError(f"unknown policy {name!r}; available: {', '.join(sorted(_POLICIES))}")
    module, attr = _POLICIES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def policy_from_payload(payload: dict[str, Any], where: str | Path = "") -> Policy:
    """Rebuild a saved policy (the dict `save_payload` made)."""
    from rlad.errors import ConfigError

    name = payload.get("policy")
    if not name:
        raise ConfigError(f"{where}: does not hold a grounding policy (no 'policy' entry in model.pt)")
    cls = policy_class(name)
    return cls.from_payload(payload)
