"""The GRPO loop (rlad.rl.loop) on a tiny table policy and the grounding task: wiring, resampling,
weights, resume."""

from __future__ import annotations

import copy

import pytest
import torch

from rlad.boxes import format_answer
from rlad.data.pairs.records import PairRecord
from rlad.engine import RunDir
from rlad.errors import ConfigError
from rlad.policies.base import Policy
from rlad.rl.loop import GRPOConfig, PromptSampler, score_groups, train_grpo
from rlad.rl.rewards import dclr_reward, format_reward
from rlad.rl.rollout import Completion, TokenLogProbs, flatten
from rlad.tasks.grounding import GroundingTask

TASK = GroundingTask()

# Candidate answers in 0..1000 coordinates; for a 100x100 query they are also pixel boxes x10.
CANDIDATES = [(0, 0, 0, 0), (0, 0, 500, 500), (500, 500, 1000, 1000), (0, 0, 1000, 1000), (0, 500, 500, 1000)]


class TablePolicy(Policy):
    """One learnable categorical over CANDIDATES per prompt: the smallest possible Policy."""

    name = "table"

    def __init__(self, records, forbid: set[int] | None = None):
        self.index = {r.id: i for i, r in enumerate(records)}  # prompt.key is the record id
        self.logits = torch.nn.Parameter(torch.zeros(len(records), len(CANDIDATES)))
        self.forbid = forbid or set()  # candidates this policy never samples (to force invalid groups)
        self.sample_calls: list[int] = []

    def _table(self, prompts):
        logits = self.logits[[self.index[p.key] for p in prompts]]
        if self.forbid:
            mask = torch.tensor([k in self.forbid for k in range(len(CANDIDATES))])
            logits = logits.masked_fill(mask, -1e9)
        return torch.log_softmax(logits, dim=-1)

    def sample(self, prompts, n, generator=None, greedy=False):
        self.sample_calls.append(len(prompts))
        with torch.no_grad():
            logp = self._table(prompts)
            picks = torch.multinomial(logp.exp(), n, replacement=True, generator=generator)
        return [[Completion(format_answer(CANDIDATES[k], think="t"), [int(k)], [float(logp[i, k])]) for k in row.tolist()]
                for i, row in enumerate(picks)]

    def log_probs(self, prompts, groups):
        logp = self._table(prompts)
        n = len(groups[0])
        rows = torch.arange(len(prompts)).repeat_interleave(n)
        tokens = torch.tensor([c.token_ids[0] for c in flatten(groups)])
        chosen = logp[rows, tokens][:, None]
        entropy = -(logp.exp() * logp).sum(-1)[rows][:, None]
        return TokenLogProbs(chosen, torch.ones_like(chosen), entropy)

    def trainable_parameters(self):
        return [self.logits]

    def frozen_copy(self):
        twin = copy.copy(self)
        twin.logits = torch.nn.Parameter(self.logits.detach().clone(), requires_grad=False)
        return twin

    def state_dict(self):
        return {"logits": self.logits.detach().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.logits.copy_(state["logits"])

    def config_dict(self):
        return {}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Tiny tensors: a second thread only spins against other processes on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_records(boxes):
    return [PairRecord(f"p{i}", "ref.png", "query.png", box, (100, 100), (100, 100), "c", "d")
            for i, box in enumerate(boxes)]


def test_score_groups_scores_every_completion_with_every_reward():
    records = make_records([(0, 0, 50, 50)])
    policy = TablePolicy(records)
    groups = [[Completion(format_answer(CANDIDATES[1], think="x"), [1], [0.0]),
               Completion("<answer>(0,0),(0,0)</answer>", [0], [0.0])]]
    rewards = score_groups(groups, [TASK.target(records[0], policy)], [format_reward, dclr_reward])
    assert rewards.shape == (1, 2, 2)
    assert rewards[0, 0].tolist() == [1.0, 1.0]  # think + answer, exact box
    assert rewards[0, 1].tolist() == [0.0, 0.0]  # no think block; zero box on a defect


def test_prompt_sampler_visits_every_prompt_once_per_epoch_and_resumes():
    sampler = PromptSampler(7, seed=3)
    first_epoch = sampler.next(7)
    assert sorted(first_epoch) == list(range(7))
    state = copy.deepcopy(sampler.state_dict())
    expected = sampler.next(10)
    again = PromptSampler(7, seed=99)
    again.load_state_dict(state)
    assert again.next(10) == expected


@pytest.mark.parametrize("rewards", [["format", "dclr"], ["iou"]])
def test_reward_rises_on_a_trivially_learnable_case(rewards):
    records = make_records([(0, 0, 50, 50), (50, 50, 100, 100), (0, 0, 0, 0), (0, 50, 50, 100)])
    policy = TablePolicy(records)
    log = []
    cfg = GRPOConfig(steps=60, group_size=8, prompts_per_step=4, lr=0.1, rewards=rewards, beta=0.0)
    summary = train_grpo(policy, TASK, records, cfg, callback=log.append)
    first = sum(line["mean_iou"] for line in log[:5]) / 5
    last = sum(line["mean_iou"] for line in log[-5:]) / 5
    assert last > first + 0.3, (first, last)
    assert summary["completions_scored"] >= 60 * 8 * 4
    assert {"reward/total", "frac_zero_variance", "groups_resampled", "kl", "entropy", "mean_iou",
            "completions_per_s"} <= set(log[-1])


def test_invalid_groups_are_resampled_rounds_times_and_keep_zero_advantage():
    # Every answer of this policy misses the only defect: all groups stay invalid (all-zero reward).
    records = make_records([(0, 0, 50, 50), (0, 0, 40, 40)])
    policy = TablePolicy(records, forbid={1, 3, 4})
    # Candidate 2 is far away from the defect but DCLR still pays for size/centre: use IoU, which is 0.
    cfg = GRPOConfig(steps=2, group_size=4, prompts_per_step=2, rounds=3, rewards=["iou"], reweighting=True)
    before = policy.logits.detach().clone()
    log = []
    train_grpo(policy, TASK, records, cfg, callback=log.append)
    assert [line["groups_resampled"] for line in log] == [2 * 3, 2 * 3]
    assert policy.sample_calls == [2, 2, 2, 2] * 2  # first round + 3 regenerations, per step
    assert all(line["groups_still_invalid"] == 2 for line in log)
    assert all(line["difficulty_weight"] == pytest.approx((torch.e + 2 ** 0.5) / 2) for line in log)
    # Zero advantage everywhere and beta's KL is zero at the reference: nothing moves.
    assert torch.allclose(policy.logits.detach(), before)


def test_without_resampling_nothing_is_regenerated():
    records = make_records([(0, 0, 50, 50)])
    policy = TablePolicy(records, forbid={1, 3, 4})
    log = []
    train_grpo(policy, TASK, records, GRPOConfig(steps=3, group_size=4, prompts_per_step=1, rewards=["iou"],
                                           resampling=False, reweighting=False), callback=log.append)
    assert policy.sample_calls == [1, 1, 1]
    assert all(line["groups_resampled"] == 0 and line["groups_invalid"] == 1 for line in log)
    assert all(line["difficulty_weight"] == 1.0 for line in log)


def test_kl_to_the_reference_grows_as_the_policy_moves():
    records = make_records([(0, 0, 50, 50), (50, 50, 100, 100)])
    policy = TablePolicy(records)
    log = []
    train_grpo(policy, TASK, records, GRPOConfig(steps=30, group_size=8, prompts_per_step=2, lr=0.1, beta=0.04),
               callback=log.append)
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert log[-1]["kl"] > 0.01


def test_checkpoint_resume_matches_an_uninterrupted_run(tmp_path):
    records = make_records([(0, 0, 50, 50), (50, 50, 100, 100), (0, 0, 0, 0)])
    cfg = GRPOConfig(steps=6, group_size=4, prompts_per_step=2, lr=0.05, checkpoint_every=3, seed=4)

    straight = TablePolicy(records)
    train_grpo(straight, TASK, records, cfg)

    run = RunDir(tmp_path / "run").create()
    interrupted = TablePolicy(records)
    train_grpo(interrupted, TASK, records, GRPOConfig(**{**cfg.__dict__, "steps": 4}), run=run)  # checkpoint at step 3
    assert [p.name for p in run.checkpoints()] == ["step_00000003.pt"]
    resumed = TablePolicy(records)  # a fresh process: everything comes from the checkpoint
    summary = train_grpo(resumed, TASK, records, cfg, run=run)
    assert torch.allclose(resumed.logits, straight.logits, atol=1e-6)
    steps_logged = [line["step"] for line in run.read_log()]
    assert steps_logged == [1, 2, 3, 4, 4, 5, 6]  # steps after the checkpoint are redone
    assert summary["steps"] == 6


@pytest.mark.parametrize(
    "change, message",
    [
        ({"group_size": 1}, "group_size"),
        ({"rewards": ["nope"]}, "unknown reward"),
        ({"advantage_scale": "batch"}, "advantage_scale"),
        ({"aggregation": "tokens"}, "aggregation"),
        ({"mu": 0}, "mu"),
    ],
)
def test_config_errors_name_the_option(change, message):
    with pytest.raises(ConfigError, match=message):
        GRPOConfig(**change).validate()


def test_the_task_refuses_weights_and_resampling_without_a_localization_reward():
    records = make_records([(0, 0, 50, 50)])
    with pytest.raises(ConfigError, match="localization reward"):
        train_grpo(TablePolicy(records), TASK, records, GRPOConfig(rewards=["format"], steps=1))
