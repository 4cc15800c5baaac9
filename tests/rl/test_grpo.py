import math

import pytest
import torch

from rlad.errors import ConfigError
from rlad.rl.grpo import (clipped_surrogate, difficulty_weights, group_advantages, grpo_loss, invalid_groups,
                          k3_kl)


# ---------------------------------------------------------------------------------- advantages
def test_group_advantages_std_hand_values():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    adv = group_advantages(r)
    # group 0: mean 0.5, unbiased std sqrt(1/3) = 0.57735
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert torch.allclose(adv[0], torch.tensor([expected, -expected, -expected, expected]))
    assert torch.equal(adv[1], torch.zeros(4))  # flat group: no signal


def test_group_advantages_none_is_dr_grpo():
    r = torch.tensor([[0.9, 0.1, 0.5]])
    assert torch.allclose(group_advantages(r, scale="none"), torch.tensor([[0.4, -0.4, 0.0]]))


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ConfigError, match="std, none"):
        group_advantages(torch.zeros(2, 3), scale="batch")
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2, 1))


# --------------------------------------------------------------------------- difficulty weights
def test_difficulty_weights_range_and_hand_value():
    loc = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.9, 0.5, 0.1, 0.2]])
    w = difficulty_weights(loc)
    assert w[0].item() == pytest.approx(1.0)
    assert w[1].item() == pytest.approx((math.e + math.sqrt(2)) / 2)  # ~2.066
    # m = 0.425, p_err = 2/4 -> (exp(0.575) + sqrt(1.5)) / 2
    assert w[2].item() == pytest.approx((math.exp(0.575) + math.sqrt(1.5)) / 2, rel=1e-6)
    assert w[1] > w[2] > w[0]


# ----------------------------------------------------------------------------- invalid groups
def test_invalid_groups():
    loc = torch.tensor([
        [0.0, 0.0, 0.0],        # all wrong, flat -> invalid
        [0.4, 0.4, 0.4],        # flat, partial credit, nobody succeeds -> invalid
        [1.0, 1.0, 1.0],        # flat but solved -> valid
        [0.0, 0.2, 0.0],        # varied -> valid
        [0.3, 0.3 + 1e-8, 0.3],  # varied only by float noise -> invalid
    ])
    assert invalid_groups(loc).tolist() == [True, True, False, False, True]
    assert invalid_groups(loc, success_value=0.4).tolist()[1] is False


# ------------------------------------------------------------------------------- KL and clip
def test_k3_kl_hand_values():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.0, -1.5])
    d = ref - logp  # 0, 1, -1
    expected = torch.exp(d) - d - 1
    assert torch.allclose(k3_kl(logp, ref), expected)
    assert k3_kl(logp, ref)[0] == 0 and (k3_kl(logp, ref) >= 0).all()
    assert k3_kl(logp, ref)[1].item() == pytest.approx(math.e - 2)


def test_clipped_surrogate_hand_values():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.1, 1.5, 0.5, 1.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss = clipped_surrogate(logp, old, adv)
    # rho 1.1, A+ -> -1.1; rho 1.5, A+ -> clipped -1.2; rho 0.5, A- -> clipped at 0.8 -> 0.8;
    # rho 1.5, A- -> min(-1.5, -1.2) = -1.5 -> 1.5 (pessimistic: not clipped)
    assert torch.allclose(loss, torch.tensor([[-1.1, -1.2, 0.8, 1.5]]), atol=1e-6)


def test_eps_high_really_takes_effect():
    old = torch.zeros(1, 1)
    logp = torch.log(torch.tensor([[1.25]]))
    adv = torch.ones(1)
    assert clipped_surrogate(logp, old, adv, eps_high=0.2).item() == pytest.approx(-1.2)
    assert clipped_surrogate(logp, old, adv, eps_high=0.28).item() == pytest.approx(-1.25)
    # and in the full loss: the token is clipped (no gradient) at 0.2 but not at 0.28
    for eps_high, has_grad in ((0.2, False), (0.28, True)):
        lp = logp.clone().requires_grad_(True)
        loss, stats = grpo_loss(lp, old, None, adv, torch.ones(1, 1), eps_high=eps_high)
        loss.backward()
        assert (lp.grad.abs().item() > 0) is has_grad
        assert stats["clip_frac_high"] == (0.0 if has_grad else 1.0)
    # eps_low must not leak into the high side
    assert clipped_surrogate(logp, old, adv, eps_low=0.5, eps_high=0.2).item() == pytest.approx(-1.2)


def test_clipped_tokens_get_zero_gradient():
    old = torch.zeros(2, 3)
    rho = torch.tensor([[1.5, 1.0, 0.9], [0.5, 1.1, 1.5]])
    adv = torch.tensor([1.0, -1.0])
    logp = torch.log(rho).requires_grad_(True)
    loss, stats = grpo_loss(logp, old, None, adv, torch.ones(2, 3), beta=0.0)
    loss.backward()
    grad = logp.grad
    # binding clips: (0,0) high with A+, (1,0) low with A-; the rest get -A * rho / (3 * 2)
    assert grad[0, 0] == 0 and grad[1, 0] == 0
    for i, j in [(0, 1), (0, 2), (1, 1), (1, 2)]:
        assert grad[i, j].item() == pytest.approx(-adv[i].item() * rho[i, j].item() / 6, rel=1e-5)
    assert stats["clip_frac_high"] == pytest.approx(1 / 6) and stats["clip_frac_low"] == pytest.approx(1 / 6)


# ------------------------------------------------------------------------------------ the loss
def _batch():
    torch.manual_seed(0)
    n, t = 4, 5
    logp = -torch.rand(n, t, dtype=torch.float64) - 0.1
    old = logp + 0.05 * torch.randn(n, t, dtype=torch.float64)
    ref = logp + 0.2 * torch.randn(n, t, dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5, 0.3, -1.2], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float64)
    return logp, old, ref, adv, mask


def test_grpo_loss_sequence_aggregation_by_hand():
    logp = torch.log(torch.tensor([[1.0, 1.1, 9.0], [1.0, 0.9, 9.0]]))  # last column is padding
    old = torch.zeros(2, 3)
    ref = torch.log(torch.tensor([[1.0, 1.0, 1.0], [math.e, 1.0, 1.0]]))
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    loss, stats = grpo_loss(logp, old, ref, adv, mask, beta=0.5)
    # surrogate: seq0 tokens -2.0, -2.2; seq1 tokens 1.0, 0.9
    # kl: seq0 (0, exp(-log1.1) + log1.1 - 1); seq1 (e - 2, exp(-log0.9) + log0.9 - 1)
    k = lambda r: 1 / r + math.log(r) - 1  # k3 for d = -log(r)
    seq0 = (-2.0 - 2.2 + 0.5 * (0 + k(1.1))) / 2
    seq1 = (1.0 + 0.9 + 0.5 * ((math.e - 2) + k(0.9))) / 2
    assert loss.item() == pytest.approx((seq0 + seq1) / 2, rel=1e-6)
    assert stats["policy_loss"] == pytest.approx(((-2.0 - 2.2) / 2 + (1.0 + 0.9) / 2) / 2, rel=1e-6)
    assert stats["kl"] == pytest.approx((0 + k(1.1) + (math.e - 2) + k(0.9)) / 4, rel=1e-6)
    assert stats["ratio_mean"] == pytest.approx((1.0 + 1.1 + 1.0 + 0.9) / 4, rel=1e-6)
    assert stats["n_tokens"] == 4 and stats["n_sequences"] == 2


def test_grpo_loss_token_aggregation_and_weights_by_hand():
    logp = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    weights = torch.tensor([2.0, 1.0])
    # per-token surrogate = -A (rho = 1): seq0 three tokens of -1, seq1 one token of +1
    token, _ = grpo_loss(logp, logp, None, adv, mask, aggregation="token", sequence_weights=weights)
    assert token.item() == pytest.approx((2 * -3 + 1 * 1) / 4)
    seq, _ = grpo_loss(logp, logp, None, adv, mask, aggregation="sequence", sequence_weights=weights)
    assert seq.item() == pytest.approx((2 * -1 + 1 * 1) / 2)
    with pytest.raises(ConfigError, match="sequence, token"):
        grpo_loss(logp, logp, None, adv, mask, aggregation="dapo")


def test_overlong_filter_drops_completions():
    logp, old, ref, adv, mask = _batch()
    keep = torch.tensor([True, False, True, True])
    lp = logp.clone().requires_grad_(True)
    loss, stats = grpo_loss(lp, old, ref, adv, mask, keep=keep)
    loss.backward()
    assert torch.all(lp.grad[1] == 0) and lp.grad[0].abs().sum() > 0
    rows = [0, 2, 3]
    expected, _ = grpo_loss(logp[rows], old[rows], ref[rows], adv[rows], mask[rows])
    assert loss.item() == pytest.approx(expected.item())
    assert stats["n_sequences"] == 3 and stats["n_tokens"] == int(mask[rows].sum())


def test_nothing_kept_gives_zero_loss_and_zero_gradient():
    logp, old, ref, adv, mask = _batch()
    lp = logp.clone().requires_grad_(True)
    loss, stats = grpo_loss(lp, old, ref, adv, mask, keep=torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(lp.grad == 0)
    assert stats["n_tokens"] == 0 and math.isnan(stats["ratio_mean"])


def test_no_reference_or_zero_beta_means_no_kl():
    logp, old, ref, adv, mask = _batch()
    without_ref, s1 = grpo_loss(logp, old, None, adv, mask, beta=0.04)
    zero_beta, s2 = grpo_loss(logp, old, ref, adv, mask, beta=0.0)
    with_kl, s3 = grpo_loss(logp, old, ref, adv, mask, beta=0.04)
    assert without_ref.item() == pytest.approx(zero_beta.item())
    assert s1["kl"] == 0.0 and s3["kl"] > 0
    assert with_kl.item() > without_ref.item()  # k3 >= 0, so KL can only add


def test_padding_garbage_does_not_leak():
    logp, old, ref, adv, mask = _batch()
    dirty = logp.clone()
    dirty[mask == 0] = float("nan")
    clean_loss, _ = grpo_loss(logp, old, ref, adv, mask)
    dirty_loss, stats = grpo_loss(dirty, old, ref, adv, mask)
    assert dirty_loss.item() == pytest.approx(clean_loss.item())
    assert math.isfinite(stats["kl"]) and math.isfinite(stats["ratio_mean"])


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_grpo_loss_gradcheck(aggregation):
    logp, old, ref, adv, mask = _batch()
    weights = torch.tensor([1.0, 2.066, 1.3, 1.0], dtype=torch.float64)
    keep = torch.tensor([True, True, False, True])
    # small ratio deviations keep every token away from the clip kinks, where the loss is not smooth
    logp = logp.clone().requires_grad_(True)

    def f(lp):
        return grpo_loss(lp, old, ref, adv, mask, beta=0.04, aggregation=aggregation,
                         sequence_weights=weights, keep=keep)[0]

    assert torch.autograd.gradcheck(f, (logp,), eps=1e-6, atol=1e-6)


def test_gradcheck_with_clipped_tokens_away_from_the_kink():
    old = torch.zeros(2, 3, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.5, 1.05, 0.95], [0.5, 1.1, 0.6]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([0.7, -1.3], dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda lp: grpo_loss(lp, old, None, adv, mask)[0], (logp,))


def test_shape_mismatch_is_reported():
    logp, old, ref, adv, mask = _batch()
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, old, ref, adv[:3], mask)
    with pytest.raises(ValueError, match="token_mask"):
        grpo_loss(logp, old, ref, adv, mask[:, :3])
