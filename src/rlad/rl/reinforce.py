"""REINFORCE with a moving-average baseline and an entropy bonus, as pure tensor functions plus one
small stateful baseline (used by the NBS patch sampler).

The released NBS code "updated" its sampler by backpropagating the negative reward, a number with no
path to the policy's parameters, so the policy never changed. The loss here is the policy-gradient
surrogate `-(advantage * log pi(a|s))`, whose gradient is the REINFORCE estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def linear_anneal(step: int, length: int, start: float, end: float) -> float:
    """`start` at step 0, moving linearly to `end` at step `length`, then constant (length <= 0: `end`)."""
    if length <= 0:
        return float(end)
    fraction = min(max(step / length, 0.0), 1.0)
    return float(start + (end - start) * fraction)


def discounted_returns(rewards: Tensor, episode_ids: Tensor, gamma: float) -> Tensor:
    """Per-action return `r_t + gamma r_{t+1} + ...` within each episode.

    `rewards` (N,) and `episode_ids` (N,) list the actions in the order they were taken; actions of
    different episodes may be interleaved (several episodes run side by side)."""
    returns = torch.zeros_like(rewards, dtype=torch.float32)
    running: dict[int, float] = {}
    for index in range(len(rewards) - 1, -1, -1):
        episode = int(episode_ids[index])
        running[episode] = float(rewards[index]) + gamma * running.get(episode, 0.0)
        returns[index] = running[episode]
    return returns


@dataclass
class MovingBaseline:
    """Exponential moving average of the return (the baseline) and of its variance (for scaling)."""

    momentum: float = 0.9
    mean: float = 0.0
    var: float = 1.0
    initialised: bool = False

    def advantages(self, returns: Tensor, normalise: bool = True) -> Tensor:
        """Advantages against the baseline *before* this batch updates it (so a batch never explains
        itself away), then fold the batch into the averages."""
        returns = returns.float()
        if not self.initialised:
            self.mean = float(returns.mean())
            self.var = float(returns.var(unbiased=False)) if returns.numel() > 1 else 1.0
            self.initialised = True
            centred = returns - self.mean
        else:
            centred = returns - self.mean
            self.mean = self.momentum * self.mean + (1 - self.momentum) * float(returns.mean())
            batch_var = float(((returns - self.mean) ** 2).mean())
            self.var = self.momentum * self.var + (1 - self.momentum) * batch_var
        if normalise:
            centred = centred / (self.var**0.5 + 1e-6)
        return centred

    def state_dict(self) -> dict:
        return {"momentum": self.momentum, "mean": self.mean, "var": self.var, "initialised": self.initialised}

    def load_state_dict(self, state: dict) -> None:
        self.momentum = float(state["momentum"])
        self.mean = float(state["mean"])
        self.var = float(state["var"])
        self.initialised = bool(state["initialised"])


def reinforce_loss(logits: Tensor, actions: Tensor, advantages: Tensor, entropy_coef: float = 0.01) -> tuple[Tensor, dict]:
    """Policy-gradient loss for categorical actions.

    logits (N, A) from the policy on the stored states, actions (N,) taken, advantages (N,) treated as
    constants. Returns the loss `-mean(A * log pi(a|s)) - entropy_coef * mean(H(pi(.|s)))` and
    diagnostics (mean log-prob, entropy)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    taken = log_probs.gather(1, actions.long().view(-1, 1)).squeeze(1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    advantages = advantages.detach().float()
    loss = -(advantages * taken).mean() - entropy_coef * entropy.mean()
    return loss, {"log_prob": float(taken.detach().mean()), "entropy": float(entropy.detach().mean())}
