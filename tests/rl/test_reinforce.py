"""REINFORCE core used by the NBS sampler: returns, baseline, loss gradient, annealing."""

from __future__ import annotations

import math

import pytest
import torch

from rlad.rl.reinforce import MovingBaseline, discounted_returns, linear_anneal, reinforce_loss


def test_linear_anneal_endpoints_and_clamp():
    assert linear_anneal(0, 100, 1.0, 0.0) == 1.0
    assert linear_anneal(50, 100, 1.0, 0.0) == pytest.approx(0.5)
    assert linear_anneal(100, 100, 1.0, 0.0) == 0.0
    assert linear_anneal(500, 100, 1.0, 0.2) == pytest.approx(0.2)
    assert linear_anneal(3, 0, 1.0, 0.3) == pytest.approx(0.3)


def test_discounted_returns_with_interleaved_episodes():
    rewards = torch.tensor([1.0, 10.0, 2.0, 20.0, 3.0])
    episodes = torch.tensor([0, 1, 0, 1, 0])
    returns = discounted_returns(rewards, episodes, gamma=0.5)
    # episode 0: 1 + 0.5*2 + 0.25*3, 2 + 0.5*3, 3 ; episode 1: 10 + 0.5*20, 20
    assert returns.tolist() == pytest.approx([2.75, 20.0, 3.5, 20.0, 3.0])


def test_moving_baseline_centres_against_the_previous_mean():
    baseline = MovingBaseline(momentum=0.5)
    first = baseline.advantages(torch.tensor([1.0, 3.0]), normalise=False)
    assert first.tolist() == pytest.approx([-1.0, 1.0])  # first batch: its own mean
    assert baseline.mean == pytest.approx(2.0)
    second = baseline.advantages(torch.tensor([4.0, 4.0]), normalise=False)
    assert second.tolist() == pytest.approx([2.0, 2.0])  # against 2.0, not against itself
    assert baseline.mean == pytest.approx(3.0)
    state = baseline.state_dict()
    restored = MovingBaseline()
    restored.load_state_dict(state)
    assert restored.state_dict() == state


def test_reinforce_loss_gradient_is_the_policy_gradient():
    logits = torch.tensor([[0.2, -0.1, 0.5], [1.0, 0.0, -1.0]], requires_grad=True)
    actions = torch.tensor([2, 0])
    advantages = torch.tensor([1.5, -0.5])
    loss, info = reinforce_loss(logits, actions, advantages, entropy_coef=0.0)
    loss.backward()
    probs = torch.softmax(logits.detach(), -1)
    onehot = torch.nn.functional.one_hot(actions, 3).float()
    expected = -(advantages.view(-1, 1) * (onehot - probs)) / 2  # d/dlogits of -mean(A log pi(a))
    assert torch.allclose(logits.grad, expected, atol=1e-6)
    assert info["entropy"] > 0


def test_entropy_bonus_pushes_towards_uniform():
    logits = torch.tensor([[3.0, 0.0, 0.0]], requires_grad=True)
    loss, _ = reinforce_loss(logits, torch.tensor([0]), torch.tensor([0.0]), entropy_coef=1.0)
    loss.backward()
    assert logits.grad[0, 0] > 0  # gradient descent lowers the dominant logit


def test_reinforce_learns_the_rewarded_action():
    torch.manual_seed(0)
    policy = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    baseline = MovingBaseline()
    states = torch.randn(64, 4)

    def rewarded_share() -> float:
        with torch.no_grad():
            return float(torch.softmax(policy(states), -1)[:, 1].mean())

    before = rewarded_share()
    for _ in range(60):
        with torch.no_grad():
            actions = torch.multinomial(torch.softmax(policy(states), -1), 1).squeeze(1)
        rewards = (actions == 1).float()
        loss, _ = reinforce_loss(policy(states), actions, baseline.advantages(rewards), entropy_coef=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before < 0.5 and rewarded_share() > 0.9
    assert not math.isnan(rewarded_share())
