"""Multiple-choice questions on a tiny saved Qwen-VL checkpoint, through the CLI: rlad data questions ->
rlad grpo --task mcq --policy hf (a fresh model; a warm start from rlad fit hf --questions, with rlad's loop
and with --engine trl) -> rlad test-questions; and the TRL dataset of questions with the rewards reading it."""

from __future__ import annotations

import json

import pytest

from rlad.cli.main import main
from rlad.data.questions.records import load_questions
from rlad.engine import RunDir

SMALL = ["--set", "policy.max_new_tokens=24", "--set", "threads=1"]
STEPS = ["--set", "grpo.steps=2", "--set", "grpo.group_size=2", "--set", "grpo.prompts_per_step=2"]


def run_json(args, capsys) -> dict:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.fixture
def question_files(tiny_mvtec_factory, tmp_path, capsys) -> dict:
    root = tiny_mvtec_factory(tmp_path / "tile", n_test_good=4, n_per_type=3)
    files = {split: tmp_path / f"{split}.jsonl" for split in ("train", "test")}
    for split, path in files.items():
        run_json(["data", "questions", root, "--out", path, "--split", split, "--train-per-type", "1", "--json"], capsys)
    return files


def test_grpo_mcq_hf_and_test_questions_end_to_end(tiny_vlm, question_files, tmp_path, capsys):
    model = str(tiny_vlm("qwen2_vl"))
    train, test = question_files["train"], question_files["test"]

    # A fresh random checkpoint runs the whole loop (it never writes the format: no reward, no signal).
    fresh = run_json(["grpo", "--task", "mcq", "--policy", "hf", "--model", model, "--questions", train, "--out",
                      tmp_path / "fresh", *SMALL, *STEPS, "--json"], capsys)
    assert fresh["steps"] == 2 and fresh["completions_scored"] >= 8
    assert all("accuracy" in line and "parse_failure" in line for line in RunDir(tmp_path / "fresh").read_log())

    # The warm start teaches the answer format and letters; then the policy's answers parse.
    warm = tmp_path / "warm"
    fitted = run_json(["fit", "hf", "--model", model, "--questions", train, "--out", warm, *SMALL,
                       "--set", "policy.lora=false", "--set", "train.epochs=12", "--set", "train.batch_size=2", "--set", "train.lr=3e-3", "--json"],
                      capsys)
    assert fitted["pairs"] == len(load_questions(train))
    assert RunDir(warm).load_config()["task"] == "mcq"
    before = run_json(["test-questions", warm, "--questions", test, "--json"], capsys)["results"]["1-shot"]
    assert before["parse_failure_rate"] <= 0.2 and before["n"] == len(load_questions(test))

    for engine in ("rlad", "trl"):
        out = tmp_path / engine
        trained = run_json(["grpo", "--task", "mcq", "--policy", "hf", "--init", warm, "--questions", train, "--out",
                            out, *STEPS, "--set", "threads=1", "--engine", engine, "--json"], capsys)
        assert trained["steps"] == 2
        saved = RunDir(out).load_config()
        assert saved["grpo"]["rewards"] == ["choice", "roam"] and saved["pairs"] == str(train.resolve())
        report = run_json(["test-questions", out, "--questions", test, "--shots", "0", "1", "--json"], capsys)
        assert set(report["results"]) == {"0-shot", "1-shot"}
        assert report["results"]["1-shot"]["parse_failure_rate"] <= 0.5
    rewards = [line for line in RunDir(tmp_path / "trl").read_log() if "rewards/choice_reward/mean" in line]
    assert rewards, "TRL logged no choice reward"

    # Scoring a run on the questions it (or the warm start it began from) trained on is refused.
    for run in (warm, tmp_path / "rlad"):
        assert main(["test-questions", str(run), "--questions", str(train)]) == 2
        assert "trained on" in capsys.readouterr().err


def test_fit_hf_questions_errors(tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text("")
    for args, message in ((["fit", "compact", "--questions", "q.jsonl"], "--questions is for `rlad fit hf`"),
                          (["fit", "patchcore", "--questions", "q.jsonl", "--data", "d"], "--questions is for"),
                          (["fit", "hf", "--questions", "q.jsonl", "--pairs", "q.jsonl"], "instead of --pairs")):
        assert main([*args, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_the_trl_dataset_of_questions_feeds_the_choice_rewards(tiny_vlm, question_files):
    from rlad.integrations.trl import reward_functions, task_dataset
    from rlad.policies.hf_vlm.config import HFVLMConfig
    from rlad.policies.hf_vlm.policy import HFVLMPolicy
    from rlad.tasks.mcq import MCQTask

    policy = HFVLMPolicy(HFVLMConfig(model=str(tiny_vlm("qwen2_vl"))))
    records = load_questions(question_files["train"])
    data = task_dataset(MCQTask(), records, policy)
    assert set(data.column_names) == {"prompt", "images", "id", "choice", "options"}
    assert data["choice"] == [r.answer for r in records]
    assert data["options"] == ["".join(r.letters) for r in records]
    assert [len(images) for images in data["images"]] == [2] * len(records)  # template, then the image
    assert data[0]["prompt"][1]["content"][-1]["text"] == MCQTask().prompt(records[0]).text

    choice, roam = reward_functions(["choice", "roam"])
    right = [f"<think>x</think><answer>{r.answer}</answer>" for r in records]
    outside = "<think>x</think><answer>Z</answer>"  # a letter no question offers
    columns = {name: data[name] for name in ("choice", "options", "id")}
    assert choice(right, **columns) == [1.0] * len(records)
    assert roam(right, **columns) == [0.8] * len(records)
    assert choice([outside] * len(records), **columns) == [0.0] * len(records)
