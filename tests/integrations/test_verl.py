"""verl adapters, tested against verl's documented formats (verl itself cannot be imported here: it needs
Ray and pins transformers < 5.11): the parquet rows of RLHFDataset, compute_score's value and dict form,
the advantage-estimator signature and its registration decorator."""

from __future__ import annotations

import io
import json
import sys
import types

import pytest
import torch
from PIL import Image

from rlad.boxes import format_answer, to_pixels
from rlad.integrations.verl import (DATA_SOURCE, ESTIMATOR, compute_score, difficulty_weighted_grpo_advantage,
                                    export_pairs, main, parquet_rows, primary_from_score, register, write_parquet)
from rlad.policies.hf_vlm.loading import CoordinateFrame
from rlad.rl.grpo import difficulty_weights, group_advantages
from rlad.rl.rewards import dclr_reward, format_reward, iou_reward, RewardTarget
from rlad.tasks.grounding import GroundingTask


def test_parquet_rows_follow_verls_dataset_format(tiny_vlm, square_pairs, tmp_path):
    import pyarrow.parquet as pq

    frame = CoordinateFrame.from_checkpoint(str(tiny_vlm("qwen2_5_vl")), max_pixels=48 * 48)
    task = GroundingTask()
    out = write_parquet(parquet_rows(task, square_pairs[:4], frame), tmp_path / "train.parquet")
    table = pq.read_table(out)
    assert set(table.column_names) == {"data_source", "prompt", "images", "ability", "reward_model", "extra_info"}
    for record, row in zip(square_pairs, table.to_pylist()):
        assert row["data_source"] == DATA_SOURCE
        system, user = row["prompt"]
        assert system == {"role": "system", "content": task.prompt(record).system}
        # verl replaces each "<image>" of the text, in order, by the next entry of "images" (and asserts they match)
        assert user["role"] == "user" and user["content"].count("<image>") == len(row["images"]) == 2
        assert user["content"].startswith("<image><image>")
        assert row["reward_model"]["style"] == "rule"
        box = json.loads(row["reward_model"]["ground_truth"])["box"]
        query = Image.open(io.BytesIO(row["images"][1]["bytes"]))
        # the stored query is the model's input size, so pixels of the model input are pixels of this image
        assert (query.size[1], query.size[0]) == frame.resized_hw(record.query_size) == tuple(
            row["extra_info"]["model_input_hw"])
        assert query.size != (64, 64)  # the budget above really resized it
        back = to_pixels(box, frame.coordinate_mode, record.query_size, frame.resized_hw(record.query_size))
        assert all(abs(a - b) <= 64 / query.size[0] + 1e-9 for a, b in zip(back, record.box))


def test_export_entry_point(tiny_vlm, square_pairs, tmp_path, capsys):
    from rlad.data.pairs.records import write_pairs

    pairs = write_pairs(square_pairs[:3], tmp_path / "pairs.jsonl")
    assert export_pairs(pairs, str(tiny_vlm("qwen3_vl")), tmp_path / "a.parquet") == 3
    assert main([str(pairs), "--model", str(tiny_vlm("qwen3_vl")), "--out", str(tmp_path / "b.parquet")]) == 0
    assert (tmp_path / "b.parquet").read_bytes() == (tmp_path / "a.parquet").read_bytes()
    assert main([str(pairs), "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.parquet")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


ANSWERS = [
    format_answer((100, 100, 200, 200), think="same"),
    format_answer((110, 110, 210, 210), think="near"),
    format_answer((0, 0, 0, 0), think="normal"),
    "<answer>(100,100),(200,200)</answer>",  # no think block: format 0, localization 1
    "<think>x</think><answer>(100.5,100,200,200)</answer>",  # decimals: format 0
    "no answer at all",
]


@pytest.mark.parametrize("gt", [(100, 100, 200, 200), (0, 0, 0, 0)])
def test_compute_score_is_exactly_rlads_reward(gt):
    target = RewardTarget(box=gt)
    ground_truth = json.dumps({"box": list(gt)})
    for text in ANSWERS:
        result = compute_score(DATA_SOURCE, text, ground_truth, {"index": 0, "num_turns": 1})
        assert result["format"] == format_reward(text, target) and result["dclr"] == dclr_reward(text, target)
        assert result["score"] == format_reward(text, target) + dclr_reward(text, target)
        other = compute_score(DATA_SOURCE, text, ground_truth, None, rewards=["iou"])
        assert other == {"score": iou_reward(text, target), "iou": iou_reward(text, target)}


def test_the_estimator_is_rlads_weighted_group_advantage_by_uid():
    # two groups of three, rows interleaved (verl reorders its batch; groups are found by uid)
    fmt = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    loc = torch.tensor([0.9, 0.0, 0.4, 0.25, 0.1, 0.0])
    uid = ["a", "b", "a", "b", "a", "b"]
    scores = fmt + loc
    mask = torch.tensor([[1, 1, 1, 0]] * 6, dtype=torch.float32)
    token_rewards = torch.zeros(6, 4)
    token_rewards[:, 2] = scores  # verl puts the score on the last response token
    adv, returns = difficulty_weighted_grpo_advantage(token_rewards, mask, uid, config=None)
    assert torch.equal(adv, returns) and adv[:, 3].eq(0).all()
    for name in ("a", "b"):
        rows = [i for i, u in enumerate(uid) if u == name]
        expected = group_advantages(scores[rows][None]) * difficulty_weights(loc[rows][None])[:, None]
        assert torch.allclose(adv[rows, 0], expected[0], atol=1e-6)
        assert torch.allclose(adv[rows, 1], expected[0], atol=1e-6)  # the same value on every response token
    unscaled, _ = difficulty_weighted_grpo_advantage(token_rewards, mask, uid,
                                                     config=types.SimpleNamespace(norm_adv_by_std_in_grpo=False))
    rows = [0, 2, 4]
    expected = group_advantages(scores[rows][None], "none") * difficulty_weights(loc[rows][None])[:, None]
    assert torch.allclose(unscaled[rows, 0], expected[0], atol=1e-6)


def test_localization_recovered_from_the_sum():
    scores = torch.tensor([1.75, 0.4, 2.0, 0.0, 1.0])
    assert torch.allclose(primary_from_score(scores), torch.tensor([0.75, 0.4, 1.0, 0.0, 0.0]))
    assert torch.equal(primary_from_score(scores, ["dclr"]), scores)
    with pytest.raises(Exception, match="one localization reward"):
        primary_from_score(scores, ["format", "choice"])


def test_register_uses_verls_decorator(monkeypatch):
    registry = {}

    def register_adv_est(name):
        def decorator(fn):
            registry[name] = fn
            return fn
        return decorator

    module = types.ModuleType("verl.trainer.ppo.core_algos")
    module.ADV_ESTIMATOR_REGISTRY, module.register_adv_est = registry, register_adv_est
    for name in ("verl", "verl.trainer", "verl.trainer.ppo"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "verl.trainer.ppo.core_algos", module)
    register()
    register()  # idempotent: verl's decorator refuses a second, different function under one name
    assert registry == {ESTIMATOR: difficulty_weighted_grpo_advantage}
