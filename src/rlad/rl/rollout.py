"""What a GRPO loop passes between a task, a policy and the rewards, whatever the task or policy.

* `Prompt`: what a policy reads, written by a task: the images in the order the model sees them and
  the instruction text. A vision-language policy renders it with its chat template; the compact
  grounder reads only the two images (reference, query).
* `Completion`: one sampled answer, its token ids and their sampling-time log-probs.
* `TokenLogProbs`: per-token log-probs of given completions under the current parameters.

Layout: a policy's `sample(prompts, n)` returns one list of n completions per prompt (a *group*);
`log_probs(prompts, groups)` returns (N, T) tensors with N = len(prompts) * n rows, group after
group, T the longest completion (right-padded, `mask` marks real tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Prompt:
    """One model input: image paths in reading order and the user's text (plus the system text
    that states the answer format). `key` identifies the record it was made from."""

    images: tuple[str, ...]
    text: str = ""
    system: str = ""
    key: str = ""


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


def pad_to(values: torch.Tensor, width: int) -> torch.Tensor:
    """(N, T) -> (N, width): cut or right-pad with zeros."""
    if values.shape[1] >= width:
        return values[:, :width]
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))
