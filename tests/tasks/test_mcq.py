"""The multiple-choice task: prompts any VLM policy can render, letter targets with their options, the
reward checks, and learning under the real GRPO loop with a policy over answer texts."""

from __future__ import annotations

import numpy as np
import pytest

from rlad.data.questions.records import MCQRecord
from rlad.errors import ConfigError
from rlad.rl.loop import GRPOConfig, train_grpo
from rlad.rl.rewards import RewardTarget
from rlad.rl.rollout import Completion
from rlad.tasks.mcq import ANSWER_FORMAT, MCQTask
from rlad.tasks.registry import get_task
from rlad.workflows.grounding import build_grpo_config

TYPES = ("hole", "scratch", "crack", "stain")


def question(i: int, right: str = "hole", templates=("t.png",), seed: int = 0) -> MCQRecord:
    options = tuple(np.random.default_rng([seed, i]).permutation(TYPES).tolist())
    return MCQRecord(id=f"q{i}", image=f"img{i}.png", templates=templates, question="Which defect?",
                     options=options, answer="ABCD"[options.index(right)], type="Defect Classification",
                     category="c", dataset="d", defect_type=right)


def test_prompt_shows_template_then_image_with_lettered_options():
    task = get_task("mcq")
    record = question(0, templates=("t1.png", "t2.png"))
    prompt = task.prompt(record)
    assert prompt.images == ("t1.png", "img0.png")  # 1-shot: the first template, then the inspected image
    assert prompt.key == "q0" and prompt.system == ANSWER_FORMAT
    assert "<think>" in prompt.system and "<answer>" in prompt.system
    lines = prompt.text.splitlines()
    assert "defect-free" in lines[0] and "last image is the inspected image" in lines[0]
    assert lines[1] == "Question: Which defect?"
    assert lines[2:] == [f"{letter}. {text}" for letter, text in zip("ABCD", record.options)]
    zero = MCQTask(shots=0).prompt(record)
    assert zero.images == ("img0.png",) and "defect-free" not in zero.text
    assert MCQTask(shots=1).prompt(question(1, templates=())).images == ("img1.png",)  # no template: 0-shot
    two = MCQTask(shots=2).prompt(record)
    assert two.images == ("t1.png", "t2.png", "img0.png") and "first 2 images" in two.text


def test_target_names_the_letter_and_the_options():
    record = question(0)
    assert MCQTask().target(record) == RewardTarget(choice=record.answer, options=("A", "B", "C", "D"))
    assert MCQTask().answer(f"<think>x</think><answer>{record.answer}</answer>", record) == record.answer
    assert MCQTask().answer("<think>x</think><answer>E</answer>", record) is None


def test_rewards_the_task_accepts():
    task = MCQTask()
    task.check_rewards(["choice", "roam"], needs_primary=True)
    task.check_rewards(["choice_format", "choice", "roam"], needs_primary=False)
    with pytest.raises(ConfigError, match="score boxes"):
        task.check_rewards(["format", "choice"], needs_primary=False)
    with pytest.raises(ConfigError, match="correctness reward"):
        task.check_rewards(["roam"], needs_primary=True)


def test_grpo_defaults_are_anomalyr1s_recipe_for_mcq_only():
    mcq = build_grpo_config(task_name="mcq", policy_name="compact")
    assert mcq.grpo.rewards == ["choice", "roam"] and not mcq.grpo.reweighting and not mcq.grpo.resampling
    grounding = build_grpo_config(policy_name="compact")
    assert grounding.grpo.rewards == ["format", "dclr"] and grounding.grpo.reweighting
    overridden = build_grpo_config(task_name="mcq", overrides=["grpo.reweighting=true"])
    assert overridden.grpo.reweighting and MCQTask.grpo_defaults["reweighting"] is False


def test_rollout_stats():
    targets = [RewardTarget(choice="B", options=("A", "B"))]
    groups = [[Completion(t, [0], [0.0]) for t in ("<answer>B</answer>", "<answer>A</answer>", "no answer", "<answer>C</answer>")]]
    assert MCQTask().rollout_stats(groups, targets) == {"accuracy": 0.25, "parse_failure": 0.5}


@pytest.mark.parametrize("options", [
    dict(rewards=["choice", "roam"], reweighting=False, resampling=False),                    # AnomalyR1
    dict(rewards=["choice_format", "choice", "roam"], reweighting=True, resampling=True),     # + DifferAD-R1's additions
])
def test_accuracy_rises_under_the_real_loop(letter_policy, options):
    # The right answer is always "hole", at a different letter in each question: only a policy that
    # learns from the rewards which option text is right gets better.
    records = [question(i) for i in range(8)]
    assert len({r.answer for r in records}) > 1
    policy = letter_policy()
    log = []
    cfg = GRPOConfig(steps=40, group_size=8, prompts_per_step=4, lr=0.1, beta=0.0, **options)
    train_grpo(policy, MCQTask(), records, cfg, callback=log.append)
    first = np.mean([line["accuracy"] for line in log[:2]])
    last = np.mean([line["accuracy"] for line in log[-5:]])
    assert first < 0.5 and last > 0.9, (first, last)
    assert log[-1]["reward/choice"] > 0.9 and log[-1]["reward/roam"] > 0.9
    assert {"parse_failure", "groups_resampled", "difficulty_weight"} <= set(log[-1])
    # The policy saw 1-shot prompts: template first, then the inspected image.
    assert policy.prepared[0].images == ("t.png", "img0.png")
