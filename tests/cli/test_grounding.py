"""End to end through the CLI: rlad data pairs -> fit compact -> grpo -> test-grounding -> ground."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlad.cli.main import main
from rlad.data.pairs.builders import build_pairs
from rlad.data.pairs.records import load_pairs
from rlad.engine import RunDir
from rlad.metrics.grounding import grounding_metrics

SMALL = ["--set", "policy.image_size=64", "--set", "policy.width=16", "--set", "policy.bins=16",
         "--set", "policy.weights=random"]


@pytest.fixture
def pairs(tiny_mvtec, tmp_path):
    out = tmp_path / "pairs.jsonl"
    build_pairs(tiny_mvtec, out, synthetic=4, reference="random")
    return out


def run_json(args, capsys) -> dict:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_fit_grpo_test_ground_end_to_end(pairs, tmp_path, capsys):
    warm = tmp_path / "warm"
    fitted = run_json(["fit", "compact", "--pairs", str(pairs), "--out", str(warm), *SMALL,
                       "--set", "train.epochs=2", "--json"], capsys)
    assert fitted["pairs"] == 11 and fitted["final_loss"] > 0
    payload = RunDir(warm).load_model()
    assert payload["method"] == "compact" and payload["policy"] == "compact"

    tuned = tmp_path / "grpo"
    summary = run_json(["grpo", "--pairs", str(pairs), "--init", str(warm), "--out", str(tuned),
                        "--set", "grpo.steps=3", "--set", "grpo.group_size=4", "--seed", "1", "--json"], capsys)
    assert summary["steps"] == 3 and summary["completions_scored"] >= 3 * 4 * 8
    log = RunDir(tuned).read_log()
    assert [line["step"] for line in log] == [1, 2, 3]
    for key in ("reward/format", "reward/dclr", "frac_zero_variance", "groups_resampled", "kl", "entropy", "mean_iou"):
        assert key in log[-1]
    saved = RunDir(tuned).load_config()
    assert saved["init"] == str(warm.resolve()) and saved["policy"]["image_size"] == 64

    metrics = run_json(["test-grounding", str(tuned), "--pairs", str(pairs), "--json"], capsys)
    assert metrics["n"] == 11
    # The same scores from the run's answers one pair at a time (`rlad ground`, boxes rounded to 0.1 px).
    records = load_pairs(pairs)
    answers = [run_json(["ground", str(tuned), "--reference", r.reference, "--query", r.query, "--json"], capsys)["box"]
               for r in records]
    again = grounding_metrics(answers, [r.box for r in records])
    for key in ("miou", "acc_at_0_3", "f1"):
        assert metrics[key] == pytest.approx(again[key], abs=0.02), key
    assert any(k.startswith("grounding:") for k in json.loads(RunDir(tuned).metrics_path.read_text()))

    record = next(r for r in load_pairs(pairs) if r.label == 1)
    result = run_json(["ground", str(tuned), "--reference", record.reference, "--query", record.query, "--json"], capsys)
    h, w = record.query_size
    assert result["query_size"] == [h, w]
    if result["anomalous"]:
        x1, y1, x2, y2 = result["box"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert main(["ground", str(tuned), "--reference", record.reference, "--query", record.query]) == 0
    printed = capsys.readouterr().out
    assert ("box (pixels of the query)" in printed) == result["anomalous"]


def test_rerun_is_a_no_op_and_a_changed_config_is_refused(pairs, tmp_path, capsys):
    run = tmp_path / "grpo"
    args = ["grpo", "--pairs", str(pairs), "--out", str(run), *SMALL, "--set", "grpo.steps=2",
            "--set", "grpo.group_size=2", "--set", "grpo.prompts_per_step=2"]
    assert main(args) == 0
    before = RunDir(run).model_path.stat().st_mtime_ns
    assert main(args) == 0
    assert RunDir(run).model_path.stat().st_mtime_ns == before
    capsys.readouterr()
    assert main([*args, "--set", "grpo.lr=0.1"]) == 2
    assert "different config" in capsys.readouterr().err


def test_grpo_resumes_from_its_checkpoint(pairs, tmp_path):
    run = tmp_path / "grpo"
    args = ["grpo", "--pairs", str(pairs), "--out", str(run), *SMALL, "--set", "grpo.steps=4",
            "--set", "grpo.checkpoint_every=2", "--set", "grpo.group_size=2", "--set", "grpo.prompts_per_step=2"]
    assert main(args) == 0
    RunDir(run).model_path.unlink()  # as if killed after the last checkpoint
    assert main(args) == 0
    assert [line["step"] for line in RunDir(run).read_log()] == [1, 2, 3, 4, 3, 4]


@pytest.mark.parametrize(
    "args, message",
    [
        (["grpo", "--policy", "nope", "--pairs", "P", "--out", "R"], "invalid choice: 'nope'"),
        (["fit", "compact", "--out", "R"], "needs --pairs"),
        (["grpo", "--pairs", "P", "--out", "R", "--model", "M"], "--model is for --policy hf"),
        (["grpo", "--pairs", "P", "--out", "R", "--set", "grpo.rewards=[format]"], "localization reward"),
        (["fit", "compact", "--pairs", "P", "--out", "R", "--set", "policy.bins=1"], "policy.bins"),
        (["grpo", "--pairs", "missing.jsonl", "--out", "R"], "pair file not found"),
        (["test-grounding", "no_run", "--pairs", "P"], "run directory not found"),
    ],
)
def test_user_errors_exit_2_with_a_message(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "P").write_text("")
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_ground_missing_image_exits_2_without_traceback(pairs, tmp_path):
    run = tmp_path / "warm"
    assert main(["fit", "compact", "--pairs", str(pairs), "--out", str(run), *SMALL, "--set", "train.epochs=1"]) == 0
    done = subprocess.run([sys.executable, "-m", "rlad", "ground", str(run), "--reference", "nope.png", "--query",
                           "nope.png"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "image not found" in done.stderr and "Traceback" not in done.stderr
