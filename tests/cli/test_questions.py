"""Through the CLI: rlad data questions -> rlad grpo --task mcq -> rlad test-questions, the pixel-model
answerer, rlad ground / test-grounding --mask, and one-line errors (exit 2) on bad requests."""

from __future__ import annotations

import json

import pytest

from rlad.cli.main import main
from rlad.data.pairs.builders import build_pairs
from rlad.data.pairs.records import load_pairs

pytestmark = pytest.mark.filterwarnings("ignore:policy.weights is empty", "ignore:.*RANDOMLY initialised")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_data_questions_table_and_json(tiny_mvtec, tmp_path, capsys):
    code, out, err = run_cli(capsys, "data", "questions", tiny_mvtec, "--out", tmp_path / "q.jsonl")
    assert code == 0, err
    assert "Anomaly Detection" in out and f"to {tmp_path / 'q.jsonl'}" in out
    code, out, _ = run_cli(capsys, "data", "questions", tiny_mvtec, "--out", tmp_path / "t.jsonl", "--split", "train",
                           "--train-per-type", "1", "--types", "Anomaly Detection", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["split"] == "train" and summary["per_category"]["tiny"] == {"Anomaly Detection": 2}


@pytest.mark.parametrize("argv, message", [
    (["--split", "train"], "--split train needs --train-per-type"),
    (["--types", "Defect Analysis"], "cannot be built from folders"),
    (["--dev-fraction", "2"], "dev_fraction"),
])
def test_data_questions_errors(tiny_mvtec, tmp_path, capsys, argv, message):
    code, out, err = run_cli(capsys, "data", "questions", tiny_mvtec, "--out", tmp_path / "q.jsonl", *argv)
    assert code == 2 and message in err and "Traceback" not in err and out == ""


def test_grpo_mcq_then_test_questions(registered_letter_policy, tmp_path, tiny_mvtec_factory, capsys):
    root = tiny_mvtec_factory(tmp_path / "tile", n_test_good=4, n_per_type=3)
    for split in ("train", "test"):
        assert run_cli(capsys, "data", "questions", root, "--out", tmp_path / f"{split}.jsonl", "--split", split,
                       "--train-per-type", "1")[0] == 0
    code, out, err = run_cli(capsys, "grpo", "--task", "mcq", "--policy", "letters", "--questions",
                             tmp_path / "train.jsonl", "--out", tmp_path / "run", "--set", "grpo.steps=2",
                             "--set", "grpo.group_size=2", "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] == 2
    code, out, err = run_cli(capsys, "test-questions", tmp_path / "run", "--questions", tmp_path / "test.jsonl",
                             "--shots", "0", "1", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report["results"]) == {"0-shot", "1-shot"}
    code, out, err = run_cli(capsys, "test-questions", tmp_path / "run", "--questions", tmp_path / "test.jsonl")
    assert code == 0 and "MMAD average" in out and "random floor" in out
    code, _, err = run_cli(capsys, "test-questions", tmp_path / "run", "--questions", tmp_path / "train.jsonl")
    assert code == 2 and "--allow-overlap" in err


def test_a_run_started_from_another_is_refused_on_that_ones_questions(registered_letter_policy, tmp_path,
                                                                      tiny_mvtec_factory, capsys):
    root = tiny_mvtec_factory(tmp_path / "tile", n_test_good=4, n_per_type=3)
    for split in ("train", "test"):
        assert run_cli(capsys, "data", "questions", root, "--out", tmp_path / f"{split}.jsonl", "--split", split,
                       "--train-per-type", "1")[0] == 0
    steps = ["--set", "grpo.steps=1", "--set", "grpo.group_size=2"]
    first = ["grpo", "--task", "mcq", "--policy", "letters", "--questions", tmp_path / "train.jsonl", "--out",
             tmp_path / "first", *steps]
    assert run_cli(capsys, *first)[0] == 0
    second = ["grpo", "--task", "mcq", "--policy", "letters", "--init", tmp_path / "first", "--questions",
              tmp_path / "test.jsonl", "--out", tmp_path / "second", *steps]
    assert run_cli(capsys, *second)[0] == 0
    code, _, err = run_cli(capsys, "test-questions", tmp_path / "second", "--questions", tmp_path / "train.jsonl")
    assert code == 2 and "train.jsonl" in err and "--allow-overlap" in err
    code, _, err = run_cli(capsys, "test-questions", tmp_path / "second", "--questions", tmp_path / "train.jsonl",
                           "--allow-overlap")
    assert code == 0, err


def test_grpo_task_and_record_file_must_match(tiny_mvtec, tmp_path, capsys):
    assert run_cli(capsys, "data", "questions", tiny_mvtec, "--out", tmp_path / "q.jsonl")[0] == 0
    code, _, err = run_cli(capsys, "grpo", "--task", "mcq", "--questions", tmp_path / "q.jsonl", "--out", tmp_path / "r")
    assert code == 2 and "the 'compact' policy cannot answer the 'mcq' task" in err
    code, _, err = run_cli(capsys, "grpo", "--task", "mcq", "--pairs", tmp_path / "q.jsonl", "--out", tmp_path / "r")
    assert code == 2 and "--task mcq reads its records from --questions" in err
    code, _, err = run_cli(capsys, "grpo", "--questions", tmp_path / "q.jsonl", "--out", tmp_path / "r")
    assert code == 2 and "--task grounding reads its records from --pairs" in err


@pytest.fixture
def fitted(tiny_mvtec, tmp_path, capsys):
    pixel = tmp_path / "px"
    assert run_cli(capsys, "fit", "pixelstats", "--data", tiny_mvtec, "--out", pixel, "--set", "image_size=32")[0] == 0
    pairs = tmp_path / "pairs.jsonl"
    build_pairs(tiny_mvtec, pairs, reference="random")
    grounder = tmp_path / "compact"
    code, _, err = run_cli(capsys, "fit", "compact", "--pairs", pairs, "--out", grounder, "--set", "policy.image_size=64",
                           "--set", "policy.width=8", "--set", "policy.bins=8", "--set", "train.epochs=1",
                           "--set", "policy.weights=random")
    assert code == 0, err
    return pixel, pairs, grounder


def test_pixel_answerer_ground_mask_and_test_grounding_mask(fitted, tiny_mvtec, tmp_path, capsys):
    pixel, pairs, grounder = fitted
    assert run_cli(capsys, "data", "questions", tiny_mvtec, "--out", tmp_path / "q.jsonl")[0] == 0
    code, out, err = run_cli(capsys, "test-questions", pixel, "--questions", tmp_path / "q.jsonl", "--json")
    assert code == 0, err
    assert json.loads(out)["results"]["map"]["abstain_rate"] < 1.0

    record = next(r for r in load_pairs(pairs) if r.label == 1)
    code, out, err = run_cli(capsys, "ground", grounder, "--reference", record.reference, "--query", record.query,
                             "--mask", pixel, "--mask-out", tmp_path / "m.png", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (tmp_path / "m.png").is_file() and result["mask"] == str(tmp_path / "m.png")
    code, _, err = run_cli(capsys, "ground", grounder, "--reference", record.reference, "--query", record.query,
                           "--mask", pixel)
    assert code == 2 and "--mask-out" in err

    code, out, err = run_cli(capsys, "test-grounding", grounder, "--pairs", pairs, "--mask", pixel, "--json")
    assert code == 0, err
    masks = json.loads(out)["box_masks"]
    assert set(masks) >= {"box_restricted", "map_only", "box_only", "n_scored"}
    code, out, _ = run_cli(capsys, "test-grounding", grounder, "--pairs", pairs, "--mask", pixel)
    assert code == 0 and "box_restricted" in out and "map_only" in out
