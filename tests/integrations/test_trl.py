"""The TRL route (`--engine trl`): the pair file as TRL's dataset, rlad's rewards as TRL reward functions,
group resampling and difficulty weights inside GRPOTrainer, and a run that saves a policy rlad loads."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from rlad.engine import RunDir
from rlad.integrations.trl import TRLEngineConfig, _merge_rows, make_trainer_class, task_dataset, train_trl
from rlad.policies.hf_vlm.config import HFVLMConfig
from rlad.policies.hf_vlm.policy import HFVLMPolicy
from rlad.rl.loop import GRPOConfig
from rlad.tasks.grounding import GroundingTask

ALL_WRONG_WEIGHT = (torch.e + 2 ** 0.5) / 2


def same_region(records, box=(4, 4, 28, 28)):
    return [dataclasses.replace(r, box=box, defect_type="square") for r in records]


def test_the_dataset_holds_prompts_images_and_targets_in_the_policys_coordinates(tiny_vlm, square_pairs):
    policy = HFVLMPolicy(HFVLMConfig(model=str(tiny_vlm("qwen2_5_vl"))))
    task = GroundingTask()
    data = task_dataset(task, square_pairs[:3], policy)
    assert set(data.column_names) == {"prompt", "images", "box", "id"}
    row = data[0]
    roles = [m["role"] for m in row["prompt"]]
    assert roles == ["system", "user"]
    assert [p["type"] for p in row["prompt"][1]["content"]] == ["image", "image", "text"]
    assert row["prompt"][1]["content"][2]["text"] == task.prompt(square_pairs[0]).text
    assert [image.size for image in row["images"]] == [(64, 64), (64, 64)]  # decoded from the paths
    assert json.loads(row["box"]) == list(task.target(square_pairs[0], policy).box)


def test_merge_rows_takes_the_fresh_completions_of_the_chosen_rows():
    out = {"prompt_ids": torch.ones(3, 4), "completion_ids": torch.tensor([[1, 2, 9], [3, 9, 0], [4, 5, 6]]),
           "completion_mask": torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]]),
           "old_per_token_logps": torch.full((3, 3), -1.0), "mm_token_type_ids": torch.ones(3, 7, dtype=torch.long)}
    fresh = {"prompt_ids": torch.ones(3, 4), "completion_ids": torch.tensor([[7, 7, 7, 7, 7]] * 3),
             "completion_mask": torch.ones(3, 5, dtype=torch.long), "old_per_token_logps": torch.full((3, 5), -2.0),
             "mm_token_type_ids": torch.ones(3, 9, dtype=torch.long)}
    merged = _merge_rows(out, fresh, torch.tensor([False, True, False]), pad_token_id=0)
    assert merged["completion_ids"].tolist() == [[1, 2, 9, 0, 0], [7, 7, 7, 7, 7], [4, 5, 6, 0, 0]]
    assert merged["completion_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5, [1, 1, 1, 0, 0]]
    assert merged["old_per_token_logps"][1].eq(-2).all() and merged["old_per_token_logps"][0, :3].eq(-1).all()
    assert merged["mm_token_type_ids"].shape == (3, 9) and merged["mm_token_type_ids"][:, 4:].eq(0).all()


def test_three_steps_with_resampling_and_weights(tiny_vlm, square_pairs, tmp_path):
    policy = HFVLMPolicy(HFVLMConfig(model=str(tiny_vlm("qwen3_vl")), max_new_tokens=12))
    lines = []
    cfg = GRPOConfig(steps=3, group_size=2, prompts_per_step=2, checkpoint_every=100)
    summary = train_trl(policy, GroundingTask(), same_region(square_pairs[:4]), cfg, TRLEngineConfig(),
                        RunDir(tmp_path / "run").create(), callback=lines.append)
    logged = [line for line in lines if "rlad/groups_resampled" in line]
    assert len(logged) == 3
    assert all(line["rlad/groups_resampled"] == 2 for line in logged)  # random model: every group invalid
    assert all(line["rlad/difficulty_weight"] == pytest.approx(ALL_WRONG_WEIGHT) for line in logged)
    assert summary["completions_scored"] == 3 * (4 + 4)
    assert [line["step"] for line in RunDir(tmp_path / "run").read_log() if "loss" in line] == [1, 2, 3]


def test_advantages_are_the_loops_weighted_and_resampled_ones(tiny_vlm, square_pairs, tmp_path, monkeypatch):
    """One generate-and-score call, checked against rlad.rl.grpo on the gathered rewards it saw."""
    from rlad.integrations import trl as route
    from rlad.rl.grpo import difficulty_weights, group_advantages, invalid_groups

    policy = HFVLMPolicy(HFVLMConfig(model=str(tiny_vlm("qwen2_vl")), max_new_tokens=8))
    seen = {}
    trainer_class = make_trainer_class()

    class Spy(trainer_class):
        calls = 0

        def _calculate_rewards(self, *args):
            Spy.calls += 1
            # scripted rewards: group 0 solved on the 1st draw; group 1 all-zero on the 1st draw, mixed on the 2nd
            first = torch.tensor([[1.0, 1.0], [1.0, 0.2], [1.0, 0.0], [1.0, 0.0]])
            second = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.9], [0.0, 0.1]])
            rewards = first if Spy.calls % 2 == 1 else second
            self._last_rewards = rewards
            seen.setdefault("rewards", []).append(rewards)
            return rewards

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if len(inputs) == 4 and "advantages" not in seen:
                seen["advantages"] = out["advantages"].cpu()
            return out

    monkeypatch.setattr(route, "make_trainer_class", lambda: Spy)
    cfg = GRPOConfig(steps=1, group_size=2, prompts_per_step=2, checkpoint_every=100)
    train_trl(policy, GroundingTask(), same_region(square_pairs[:2]), cfg, TRLEngineConfig(),
              RunDir(tmp_path / "run").create())
    first, second = seen["rewards"][:2]
    primary = first[:, 1].view(2, 2)
    weights = difficulty_weights(primary)
    total = torch.cat([first[:2], second[2:]]).sum(-1).view(2, 2)  # group 1 regenerated
    expected = group_advantages(total) * weights[:, None]
    expected[invalid_groups(torch.cat([first[:2], second[2:]])[:, 1].view(2, 2))] = 0.0
    assert torch.allclose(seen["advantages"], expected.flatten(), atol=1e-6)
    assert weights[1] > weights[0] > 1.0


def test_a_trl_run_from_a_warm_start_trains_and_saves_a_policy_rlad_loads(warm_run, square_pairs, tmp_path):
    from rlad.workflows.grounding import build_grpo_config, grpo, load_policy

    records = same_region(square_pairs[:4])
    from rlad.data.pairs.records import write_pairs

    pairs = write_pairs(records, tmp_path / "pairs.jsonl")
    cfg = build_grpo_config(overrides=["grpo.steps=2", "grpo.group_size=4", "grpo.prompts_per_step=2", "grpo.lr=1e-3",
                                       "threads=1", "trl.loss_type=dapo"], policy_name="hf", engine="trl",
                            init=warm_run)
    run = grpo(pairs, tmp_path / "trl", cfg, init=warm_run, policy_name="hf", engine="trl")
    start, tuned = load_policy(warm_run), load_policy(run.path)
    changed = [n for n, p in tuned.model.named_parameters()
               if p.requires_grad and not torch.equal(p, dict(start.model.named_parameters())[n])]
    assert changed
    assert any(p.name.startswith("checkpoint-") for p in (run.path / "trl").iterdir())
    assert (run.path / "hf" / "config.json").is_file()
    assert RunDir(run.path).load_config()["trl"]["loss_type"] == "dapo"


def test_a_killed_trl_run_resumes_from_its_newest_checkpoint(warm_run, square_pairs, tmp_path, monkeypatch):
    """Full fine-tuning, killed right after the checkpoint of step 1: the rerun continues from that checkpoint's
    weights and ends where an uninterrupted run ends (transformers' own loader would silently restore nothing)."""
    from transformers import Trainer

    from rlad.data.pairs.records import write_pairs
    from rlad.workflows.grounding import build_grpo_config, grpo, load_policy

    pairs = write_pairs(same_region(square_pairs[:4]), tmp_path / "pairs.jsonl")
    overrides = ["grpo.steps=2", "grpo.group_size=4", "grpo.prompts_per_step=2", "grpo.lr=1e-3",
                 "grpo.checkpoint_every=1", "threads=1"]

    def run(out):
        cfg = build_grpo_config(overrides=overrides, policy_name="hf", engine="trl", init=warm_run)
        return grpo(pairs, tmp_path / out, cfg, init=warm_run, policy_name="hf", engine="trl")

    save = Trainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run("killed")
    folder = tmp_path / "killed"
    assert sorted(p.name for p in (folder / "trl").glob("checkpoint-*")) == ["checkpoint-1"]
    assert (folder / "config.yaml").is_file() and not (folder / "model.pt").exists()  # kept for the rerun

    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    resumed, straight = run("killed"), run("straight")
    steps = [line for line in RunDir(resumed.path).read_log() if "loss" in line]
    assert [line["step"] for line in steps] == [1, 2]  # step 1 was not trained again
    assert all(line["grad_norm"] > 0 for line in steps)  # both steps did move the weights
    tuned, expected = load_policy(resumed.path), load_policy(straight.path)
    start = dict(load_policy(warm_run).model.named_parameters())
    reference = dict(expected.model.named_parameters())
    trained = [(n, p) for n, p in tuned.model.named_parameters() if p.requires_grad]
    assert any(not torch.equal(p, start[n]) for n, p in trained)
    for name, param in trained:
        assert torch.allclose(param, reference[name], atol=1e-6), name
