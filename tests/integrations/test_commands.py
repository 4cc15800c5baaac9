"""The VLM commands end to end on a tiny saved checkpoint: rlad fit hf -> rlad grpo --policy hf (own loop
and --engine trl) -> rlad test-grounding -> rlad ground; and the one-line errors of a wrong invocation."""

from __future__ import annotations

import json

import pytest

from rlad.cli.main import main
from rlad.data.pairs.records import load_pairs, write_pairs
from rlad.engine import RunDir
from rlad.metrics.grounding import grounding_metrics
from rlad.workflows.grounding import load_policy, predict_boxes

SMALL = ["--set", "policy.max_new_tokens=12", "--set", "threads=1"]
STEPS = ["--set", "grpo.steps=2", "--set", "grpo.group_size=2", "--set", "grpo.prompts_per_step=2"]


def run_json(args, capsys) -> dict:
    assert main(args) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # --json: exactly one object on stdout, nothing else


@pytest.fixture
def pairs(square_pairs, tmp_path):
    return write_pairs(square_pairs[:4], tmp_path / "pairs.jsonl")


def test_fit_grpo_test_ground_end_to_end(tiny_vlm, pairs, square_pairs, tmp_path, capsys):
    model = str(tiny_vlm("qwen3_vl"))
    warm = tmp_path / "warm"
    fitted = run_json(["fit", "hf", "--model", model, "--pairs", str(pairs), "--out", str(warm), *SMALL,
                       "--set", "train.epochs=1", "--json"], capsys)
    assert fitted["pairs"] == 4 and fitted["final_loss"] > 0
    assert RunDir(warm).load_model()["policy"] == "hf"

    own = run_json(["grpo", "--policy", "hf", "--init", str(warm), "--pairs", str(pairs), "--out",
                    str(tmp_path / "own"), *STEPS, "--json"], capsys)
    assert own["steps"] == 2 and own["completions_scored"] >= 2 * 2 * 2
    assert RunDir(tmp_path / "own").load_config()["policy"]["model"] == model

    trl = run_json(["grpo", "--policy", "hf", "--engine", "trl", "--model", model, "--pairs", str(pairs),
                    "--out", str(tmp_path / "trl"), *SMALL, *STEPS, "--set", "trl.loss_type=dr_grpo", "--json"], capsys)
    assert trl["steps"] == 2
    saved = RunDir(tmp_path / "trl").load_config()
    assert saved["engine"] == "trl" and saved["trl"]["loss_type"] == "dr_grpo"

    records = load_pairs(pairs)
    for run in ("own", "trl"):
        metrics = run_json(["test-grounding", str(tmp_path / run), "--pairs", str(pairs), "--json"], capsys)
        boxes, _ = predict_boxes(load_policy(tmp_path / run), records)  # the saved policy's greedy answers
        assert metrics["n"] == 4
        assert metrics["miou"] == pytest.approx(grounding_metrics(boxes, [r.box for r in records])["miou"])
    record = square_pairs[0]
    result = run_json(["ground", str(tmp_path / "own"), "--reference", record.reference, "--query", record.query,
                       "--json"], capsys)
    assert result["query_size"] == [64, 64] and isinstance(result["text"], str)


@pytest.mark.parametrize("args, message", [
    (["grpo", "--model", "M", "--pairs", "P", "--out", "R"], "--model is for --policy hf"),
    (["grpo", "--policy", "hf", "--pairs", "P", "--out", "R"], "needs --model PATH"),
    (["grpo", "--policy", "hf", "--model", "nowhere", "--pairs", "P", "--out", "R"], "no such checkpoint"),
    (["grpo", "--engine", "trl", "--pairs", "P", "--out", "R"], "use it with --policy hf"),
    (["fit", "hf", "--pairs", "P", "--out", "R"], "policy.model is empty"),
    (["fit", "compact", "--model", "M", "--pairs", "P", "--out", "R"], "--model is for `rlad fit hf`"),
    (["fit", "padim", "--model", "M", "--data", "D", "--out", "R"], "--model is for `rlad fit hf`"),
])
def test_wrong_invocations_exit_2_with_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "P").write_text("")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_model_that_is_not_a_qwen_vl_is_refused(tmp_path, pairs, capsys):
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=8).save_pretrained(tmp_path / "bert")
    assert main(["fit", "hf", "--model", str(tmp_path / "bert"), "--pairs", str(pairs), "--out",
                 str(tmp_path / "r")]) == 2
    assert "model type 'bert' is not supported" in capsys.readouterr().err


def test_policy_settings_cannot_be_changed_under_init(tmp_path, capsys):
    assert main(["grpo", "--policy", "hf", "--init", str(tmp_path), "--pairs", "P", "--out", "R",
                 "--set", "policy.max_pixels=1000"]) == 2
    assert "policy's settings come from that run" in capsys.readouterr().err


def _fake_run(folder, **config):
    """A finished-looking run folder (config.yaml + model.pt): enough for the checks that read only the config."""
    import yaml

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "model.pt").write_bytes(b"")
    return folder


@pytest.mark.parametrize("init_config, policy, message", [
    ({"method": "compact", "stage": "warm_start", "policy": {"width": 8}}, "hf",
     "holds a 'compact' policy, not 'hf' (use --policy compact)"),
    ({"method": "hf", "stage": "grpo", "policy": {"model": "M"}}, "compact", "holds a 'hf' policy, not 'compact'"),
    ({"method": "padim", "model": {}}, "hf", "not a grounding policy run"),
])
def test_an_init_run_of_another_kind_is_refused_in_one_line(init_config, policy, message, tmp_path, capsys):
    init = _fake_run(tmp_path / "init", **init_config)
    assert main(["grpo", "--policy", policy, "--init", str(init), "--pairs", "P", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_a_run_folder_given_as_model_points_to_init(tmp_path, pairs, capsys):
    run = _fake_run(tmp_path / "warm", method="hf", stage="warm_start", policy={"model": "M"})
    assert main(["grpo", "--policy", "hf", "--model", str(run), "--pairs", str(pairs), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "not a transformers checkpoint folder" in err and "--init RUN" in err


@pytest.mark.parametrize("missing, args, who", [
    ("transformers", ["fit", "hf"], "the 'hf' policy"),
    ("peft", ["grpo", "--policy", "hf"], "the 'hf' policy"),
    ("trl", ["grpo", "--policy", "hf", "--engine", "trl"], "--engine trl"),
])
def test_without_the_vlm_extra_the_commands_say_what_to_install(missing, args, who, tiny_vlm, pairs, tmp_path, capsys,
                                                                monkeypatch):
    import sys

    model = str(tiny_vlm("qwen2_vl"))
    monkeypatch.setitem(sys.modules, missing, None)  # what `import` sees where the package is not installed
    assert main([*args, "--model", model, "--pairs", str(pairs), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{who} needs the vlm extra: pip install 'rlad[vlm]' (cannot import {missing}" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()
