"""The grounding task (rlad.tasks.grounding): prompts, targets in each policy's coordinates, answers
back in pixels, reward checks."""

from __future__ import annotations

import pytest

from rlad.boxes import CoordinateMode
from rlad.data.pairs.records import PairRecord
from rlad.errors import ConfigError
from rlad.rl.rewards import RewardTarget
from rlad.tasks.grounding import GroundingTask

RECORD = PairRecord("p0", "ref.png", "query.png", (10, 20, 30, 40), (100, 200), (100, 200), "c", "d")


class _Relative:
    coordinate_mode = CoordinateMode.RELATIVE_1000

    def resized_hw(self, size_hw):
        return None


class _Resized:
    coordinate_mode = CoordinateMode.RESIZED

    def resized_hw(self, size_hw):
        return (size_hw[0] // 2, size_hw[1] // 2)


def test_the_prompt_shows_the_reference_first_then_the_query():
    prompt = GroundingTask().prompt(RECORD)
    assert prompt.images == ("ref.png", "query.png") and prompt.key == "p0"
    assert "<answer>" in prompt.system


@pytest.mark.parametrize("policy, expected", [(_Relative(), (50, 200, 150, 400)), (_Resized(), (5, 10, 15, 20))])
def test_targets_are_in_the_policy_coordinates_and_answers_come_back_in_pixels(policy, expected):
    task = GroundingTask()
    assert task.target(RECORD, policy) == RewardTarget(box=expected)
    x1, y1, x2, y2 = expected
    assert task.answer_box(f"<answer>({x1},{y1}),({x2},{y2})</answer>", RECORD, policy) == pytest.approx(RECORD.box)
    assert task.answer_box("no box here", RECORD, policy) is None


def test_rewards_without_a_localization_reward_are_refused_only_when_weights_or_resampling_need_one():
    task = GroundingTask()
    with pytest.raises(ConfigError, match="localization reward"):
        task.check_rewards(["format"], needs_primary=True)
    task.check_rewards(["format"], needs_primary=False)
    task.check_rewards(["format", "dclr"], needs_primary=True)


@pytest.mark.parametrize("needs_primary", [True, False])
def test_two_localization_rewards_are_refused_whatever_else_is_set(needs_primary):
    with pytest.raises(ConfigError, match="2 localization rewards"):
        GroundingTask().check_rewards(["format", "dclr", "iou"], needs_primary=needs_primary)


def test_the_cli_refuses_two_localization_rewards_before_making_a_run(tmp_path, capsys):
    from rlad.cli.main import main

    pairs = tmp_path / "p.jsonl"
    pairs.write_text("")
    out = tmp_path / "run"
    assert main(["grpo", "--pairs", str(pairs), "--out", str(out), "--set", "grpo.rewards=[format,dclr,iou]"]) == 2
    assert "localization rewards" in capsys.readouterr().err and not out.exists()
