"""GRPO core as pure tensor functions (no model, no optimizer): advantages, DifferAD-R1's
difficulty weights and invalid-group test, the clipped surrogate, k3 KL and the loss.

Shapes: B prompts, G completions per prompt, N = B * G completions laid out group after group
(completion n belongs to group n // G), T completion tokens (right-padded; `token_mask` marks real
tokens). Log-probs are per token, already gathered at the sampled token ids.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlad.errors import ConfigError

ADVANTAGE_SCALES = ("std", "none")
AGGREGATIONS = ("sequence", "token")


def group_advantages(rewards: Tensor, scale: str = "std", eps: float = 1e-4) -> Tensor:
    """(B, G) rewards -> (B, G) advantages: reward minus its group mean, divided by the group's
    unbiased std + eps ("std", GRPO) or not divided ("none", Dr. GRPO).

    A group whose rewards are all equal gets advantage 0 everywhere in both modes.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ConfigError(f"advantage scale {scale!r} is not one of {', '.join(ADVANTAGE_SCALES)}")
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (B, G) with G >= 2, got shape {tuple(rewards.shape)}")
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none":
        return centered
    return centered / (rewards.std(dim=1, keepdim=True, unbiased=True) + eps)


def difficulty_weights(loc_rewards: Tensor, error_threshold: float = 0.3) -> Tensor:
    """(B, G) localization rewards in [0, 1] -> (B,) group weights
    `w = (exp(1 - m) + sqrt(1 + p_err)) / 2`, m the group mean, p_err the share below
    `error_threshold`: 1 for a solved group, (e + sqrt 2) / 2 ~ 2.066 for an all-wrong one."""
    if loc_rewards.ndim != 2:
        raise ValueError(f"loc_rewards must be (B, G), got shape {tuple(loc_rewards.shape)}")
    mean = loc_rewards.mean(dim=1)
    p_err = (loc_rewards < error_threshold).to(loc_rewards.dtype).mean(dim=1)
    return (torch.exp(1.0 - mean) + torch.sqrt(1.0 + p_err)) / 2.0


def invalid_groups(loc_rewards: Tensor, tol: float = 1e-6, success_value: float = 1.0) -> Tensor:
    """(B, G) -> (B,) bool: groups with no learning signal worth keeping: (population) std < tol and
    no completion reaching `success_value` (an all-perfect group is solved, not invalid)."""
    if loc_rewards.ndim != 2:
        raise ValueError(f"loc_rewards must be (B, G), got shape {tuple(loc_rewards.shape)}")
    flat = loc_rewards.std(dim=1, unbiased=False) < tol
    any_success = (loc_rewards >= success_value - tol).any(dim=1)
    return flat & ~any_success


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(policy || reference): exp(d) - d - 1 with d = ref - logp.
    Non-negative, zero where the two agree."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def _per_token_advantages(advantages: Tensor, like: Tensor) -> Tensor:
    if advantages.ndim == 1 and like.ndim == 2:
        return advantages.unsqueeze(-1)
    return advantages


def clipped_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_low: float = 0.2,
                      eps_high: float = 0.2) -> Tensor:
    """Per-token PPO loss `-min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)`, rho = exp(logp - old).

    `advantages` is (N,) (one per completion) or already per token. Where the clip binds (rho above
    1 + eps_high with A > 0, or below 1 - eps_low with A < 0) the loss is constant in logp, so those
    tokens get zero gradient.
    """
    adv = _per_token_advantages(advantages, logp)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    return -torch.minimum(ratio * adv, clipped * adv)


def _check_shapes(logp: Tensor, **tensors: Tensor | None) -> None:
    if logp.ndim != 2:
        raise ValueError(f"logp must be (N, T), got shape {tuple(logp.shape)}")
    n = logp.shape[0]
    for name, t in tensors.items():
        if t is None:
            continue
        want = tuple(logp.shape) if name in ("old_logp", "ref_logp", "token_mask") else (n,)
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")


def grpo_loss(logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, advantages: Tensor,
              token_mask: Tensor, *, beta: float = 0.04, eps_low: float = 0.2, eps_high: float = 0.2,
              aggregation: str = "sequence", sequence_weights: Tensor | None = None,
              keep: Tensor | None = None) -> tuple[Tensor, dict]:
    """The GRPO objective (to minimise) and stats.

    Per token: clipped surrogate + beta * k3 KL to the reference (skipped when `ref_logp` is None or
    beta == 0). Aggregation "sequence" (original GRPO / DifferAD-R1): each completion's token mean,
    times its `sequence_weights` (the difficulty weight of its group), averaged over the kept
    completions. "token" (DAPO-style): weighted sum over all kept tokens divided by their count.
    Padded positions should hold finite values (0 is fine): they are excluded from the loss, but an
    inf there would still poison the gradient of exp().
    `keep` (N,) bool drops completions (truncated ones: the overlong filter) from loss and stats.
    When nothing is kept, the loss is a zero that still backpropagates (all-zero gradients).

    Stats (python floats): loss, policy_loss (the surrogate alone, same aggregation and weights),
    kl (token mean, 0 without a reference), clip_frac_low / clip_frac_high (share of kept tokens
    where the lower / upper clip binds), ratio_mean, n_tokens, n_sequences.
    """
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"loss aggregation {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
    _check_shapes(logp, old_logp=old_logp, ref_logp=ref_logp, token_mask=token_mask,
                  advantages=advantages, sequence_weights=sequence_weights, keep=keep)
    mask = token_mask.to(logp.dtype)
    if keep is not None:
        mask = mask * keep.to(logp.dtype).unsqueeze(-1)
    weights = sequence_weights.to(logp.dtype) if sequence_weights is not None else torch.ones_like(logp[:, 0])

    surrogate = clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high)
    use_kl = ref_logp is not None and beta != 0.0
    kl = k3_kl(logp, ref_logp) if use_kl else torch.zeros_like(logp)
    per_token = surrogate + beta * kl if use_kl else surrogate

    lengths = mask.sum(dim=1)
    counted = lengths > 0
    n_sequences = int(counted.sum())
    n_tokens = float(lengths.sum())

    def masked(values: Tensor) -> Tensor:
        # where, not a product: a padded position holding inf/nan must not leak into the sum.
        return torch.where(mask > 0, values * mask, torch.zeros_like(values))

    def aggregate(values: Tensor) -> Tensor:
        if n_sequences == 0:
            return masked(values).sum()  # exactly 0, but connected to the graph
        if aggregation == "sequence":
            per_sequence = masked(values).sum(dim=1) / lengths.clamp(min=1.0)
            return (per_sequence * weights * counted.to(logp.dtype)).sum() / n_sequences
        return (masked(values) * weights.unsqueeze(-1)).sum() / n_tokens

    loss = aggregate(per_token)
    with torch.no_grad():
        adv = _per_token_advantages(advantages, logp).expand_as(logp)
        ratio = torch.exp(logp - old_logp)
        low = ((ratio < 1.0 - eps_low) & (adv < 0)).to(logp.dtype)
        high = ((ratio > 1.0 + eps_high) & (adv > 0)).to(logp.dtype)

        def token_mean(values: Tensor) -> float:
            return float(masked(values).sum() / n_tokens) if n_tokens else 0.0

        stats = {
            "loss": float(loss),
            "policy_loss": float(aggregate(surrogate)),
            "kl": token_mean(kl),
            "clip_frac_low": token_mean(low),
            "clip_frac_high": token_mean(high),
            "ratio_mean": token_mean(ratio) if n_tokens else math.nan,  # no tokens: no ratio
            "n_tokens": int(n_tokens),
            "n_sequences": n_sequences,
        }
    return loss, stats
