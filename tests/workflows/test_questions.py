"""`rlad test-questions` as a library: MMAD scoring of answers, the training-free answerer's rules (on a
run whose maps are known), and end to end with a fitted pixel model and with a GRPO-trained policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlad.data.questions.builder import build_questions
from rlad.data.questions.records import MCQRecord, load_questions
from rlad.engine import RunDir
from rlad.errors import ConfigError, DataError
from rlad.models.postprocess import PostProcessor
from rlad.workflows import questions as wq

S = 12


def mcq(id_, kind, options, answer, defect_type="hole", category="c", dataset="d", image=None):
    return MCQRecord(id=id_, image=image or f"{id_}.png", question="?", options=tuple(options), answer=answer,
                     type=kind, category=category, dataset=dataset, defect_type=defect_type)


# ------------------------------------------------------------------------------------------ scoring
def test_score_answers_reports_every_breakdown():
    records = [
        mcq("n1", "Anomaly Detection", ["Yes", "No"], "B", defect_type="good"),
        mcq("d1", "Anomaly Detection", ["Yes", "No"], "A"),
        mcq("d2", "Anomaly Detection", ["No", "Yes"], "B"),
        mcq("c1", "Defect Classification", ["hole", "scratch", "crack", "stain"], "A"),
        mcq("c2", "Defect Classification", ["hole", "scratch", "crack", "stain"], "C", category="e"),
    ]
    answers = wq.Answers(["B", "A", None, "A", None], abstained=[False, False, False, False, True])
    report = wq.score_answers(records, answers)
    # detection: normal 1/1, defective 1/2 -> 0.75; classification 1/2; MMAD average (0.75 + 0.5) / 2.
    assert report["accuracy"] == pytest.approx(0.625)
    assert report["per_type"]["Anomaly Detection"] == {"accuracy": 0.75, "random_floor": 0.5, "n": 3, "answered": 3,
                                                       "accuracy_answered": pytest.approx(2 / 3)}
    assert report["per_type"]["Defect Classification"]["answered"] == 1
    assert report["per_type"]["Defect Classification"]["accuracy_answered"] == 1.0
    assert report["anomaly_detection"] == {"accuracy_normal": 1.0, "n_normal": 1, "accuracy_defective": 0.5,
                                           "n_defective": 2}
    assert report["parse_failure_rate"] == pytest.approx(1 / 5) and report["abstain_rate"] == pytest.approx(1 / 5)
    assert report["random_floor"] == pytest.approx((0.5 + 0.25) / 2)
    assert report["per_category"]["e"] == 0.0 and report["n_correct"] == 3


# --------------------------------------------------------------------- training-free answerer rules
class FakeRun:
    """A pixel run whose maps and scores are given per image path."""

    def __init__(self, maps: dict, scores: dict, labelled=()):
        self.maps, self.scores, self.labelled = maps, scores, list(labelled)
        self.post = PostProcessor(pixel_threshold=1.0, image_threshold=0.5, pixel_min=0.0, image_min=0.0)
        self.category = "c"
        self.path = "fake"

    def predictions(self, paths, desc=""):
        for path in paths:
            yield path, np.full((3, S, S), 0.5, np.float32), self.maps[path], self.scores[path]

    def labelled_images(self):
        return self.labelled


def blob(row: int, col: int, shape=(2, 2)) -> np.ndarray:
    out = np.zeros((S, S), np.float32)
    out[row:row + shape[0], col:col + shape[1]] = 2.0
    return out


def test_answerer_rules_on_known_maps():
    maps = {"a.png": blob(0, 0), "b.png": blob(9, 9), "round.png": blob(5, 5), "line.png": blob(1, 1, (1, 10)),
            "lab_round1.png": blob(2, 2), "lab_round2.png": blob(6, 6), "lab_line1.png": blob(3, 0, (1, 11)),
            "lab_line2.png": blob(8, 1, (1, 10))}
    scores = {"a.png": 0.9, "b.png": 0.1, "round.png": 0.9, "line.png": 0.9, **{k: 0.9 for k in maps if k.startswith("lab")}}
    run = FakeRun(maps, scores, labelled=[("lab_round1.png", "hole"), ("lab_round2.png", "hole"),
                                          ("lab_line1.png", "scratch"), ("lab_line2.png", "scratch")])
    records = [
        mcq("1", "Anomaly Detection", ["No", "Yes"], "B", image="a.png"),          # score 0.9 >= 0.5: Yes
        mcq("2", "Anomaly Detection", ["Yes.", "No."], "B", image="b.png"),        # 0.1: No
        mcq("3", "Anomaly Detection", ["Maybe", "No"], "B", image="a.png"),        # not yes/no: abstain
        mcq("4", "Defect Localization", ["bottom right", "top left", "center"], "B", image="a.png"),
        mcq("5", "Defect Localization", ["Top left.", "Bottom-right corner"], "B", image="b.png"),
        mcq("6", "Defect Localization", ["top left", "near the cap"], "A", image="a.png"),  # unreadable: abstain
        mcq("7", "Defect Classification", ["scratch", "hole", "crack"], "B", image="round.png"),
        mcq("8", "Defect Classification", ["hole", "scratch"], "B", image="line.png"),
        mcq("9", "Defect Classification", ["crack", "hole"], "B", image="round.png"),  # one known type: abstain
        mcq("10", "Object Classification", ["bottle", "cable"], "A", image="a.png"),   # cannot: abstain
    ]
    answers = wq.PixelAnswerer(run).answer(records)
    assert answers.letters == ["B", "B", None, "B", "B", None, "B", "B", None, None]
    assert answers.abstained == [False, False, True, False, False, True, False, False, True, True]


def test_without_labelled_images_classification_abstains():
    run = FakeRun({"a.png": blob(0, 0)}, {"a.png": 0.9})
    answers = wq.PixelAnswerer(run).answer([mcq("1", "Defect Classification", ["hole", "scratch"], "A", image="a.png")])
    assert answers.letters == [None] and answers.abstained == [True]


def test_every_category_needs_a_run():
    with pytest.raises(DataError, match="no pixel run for category e"):
        wq.pixel_answers({"c": None}, [mcq("1", "Anomaly Detection", ["Yes", "No"], "A", category="e")])


# ----------------------------------------------------------------------------------- end to end
@pytest.fixture
def pixel_run(tiny_mvtec, tmp_path):
    from rlad.workflows.detection import build_config, fit

    run = tmp_path / "px"
    fit("pixelstats", tiny_mvtec, run, build_config("pixelstats", overrides=["image_size=32",
                                                                             "protocol.labeled_per_type=1"]))
    return run


def test_pixel_run_end_to_end_leaves_out_its_labelled_images(pixel_run, tiny_mvtec, tmp_path):
    questions = tmp_path / "q.jsonl"
    records, _ = build_questions(tiny_mvtec, questions)
    report = wq.test_questions([pixel_run], questions, answers_out=tmp_path / "answers.jsonl")
    labelled = {str(tiny_mvtec / rel) for rel in json.loads((pixel_run / "split.json").read_text())["labeled"]}
    assert len(labelled) == 2
    expected_left_out = sum(r.image in labelled for r in records)
    assert report["n_excluded_protocol"] == expected_left_out > 0
    result = report["results"]["map"]
    assert result["n"] == len(records) - expected_left_out
    assert result["parse_failure_rate"] == 0.0
    assert result["per_type"]["Anomaly Detection"]["answered"] == result["per_type"]["Anomaly Detection"]["n"]
    assert report["answerer"] == "training-free (tiny: pixelstats)"
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert result["n_correct"] == sum(r["given"] == r["answer"] for r in rows)  # accuracy is their MMAD average
    assert len(rows) == result["n"] and {r["question"] for r in rows} <= {r.id for r in records}
    assert not {r["question"] for r in rows} & {r.id for r in records if r.image in labelled}
    assert "questions:q.jsonl" in json.loads(RunDir(pixel_run).metrics_path.read_text())


@pytest.fixture
def question_splits(tmp_path, tiny_mvtec_factory):
    root = tmp_path / "root"
    tiny_mvtec_factory(root / "tile", n_test_good=4, n_per_type=3)
    tiny_mvtec_factory(root / "plate", n_test_good=4, n_per_type=3, seed=1)
    files = {}
    for split in ("train", "test"):
        files[split] = tmp_path / f"{split}.jsonl"
        build_questions(root, files[split], split=split, train_per_type=1)
    return files


def test_policy_trained_with_grpo_is_scored_0_and_1_shot_and_refused_on_its_training_images(
        registered_letter_policy, question_splits, tmp_path):
    from rlad.workflows.grounding import build_grpo_config, grpo

    cfg = build_grpo_config(overrides=["grpo.steps=3", "grpo.group_size=4", "grpo.prompts_per_step=4"],
                            policy_name="letters", task_name="mcq")
    run = grpo(question_splits["train"], tmp_path / "run", cfg, policy_name="letters", task_name="mcq")
    assert [line["step"] for line in run.read_log()] == [1, 2, 3]
    assert "reward/roam" in run.read_log()[-1] and "accuracy" in run.read_log()[-1]

    report = wq.test_questions([run.path], question_splits["test"], shots=(0, 1))
    assert report["answerer"] == "policy letters" and set(report["results"]) == {"0-shot", "1-shot"}
    n = len(load_questions(question_splits["test"]))
    for result in report["results"].values():
        assert result["n"] == n and result["parse_failure_rate"] == 0.0 and result["abstain_rate"] == 0.0

    with pytest.raises(DataError, match="were in the questions"):
        wq.test_questions([run.path], question_splits["train"])
    assert wq.test_questions([run.path], question_splits["train"], allow_overlap=True)["results"]["1-shot"]["n"] > 0


def test_runs_that_cannot_answer_are_refused(pixel_run, tmp_path, tiny_mvtec, square_pairs):
    questions = tmp_path / "q.jsonl"
    build_questions(tiny_mvtec, questions)
    from rlad.data.pairs.records import write_pairs
    from rlad.workflows.grounding import build_fit_config, fit_compact

    pairs = write_pairs(square_pairs[:4], tmp_path / "pairs.jsonl")
    compact = fit_compact(pairs, tmp_path / "compact", build_fit_config(
        overrides=["policy.image_size=64", "policy.width=8", "policy.bins=8", "train.epochs=1", "policy.weights=random"]))
    with pytest.raises(ConfigError, match="cannot answer multiple-choice questions"):
        wq.test_questions([compact.path], questions)
    with pytest.raises(ConfigError, match="not both"):
        wq.test_questions([compact.path, pixel_run], questions)
    with pytest.raises(ConfigError, match="--shots"):
        wq.test_questions([compact.path], questions, shots=(2,))


def test_prototypes_from_the_training_questions(tmp_path, tiny_mvtec_factory):
    from rlad.workflows.detection import build_config, fit

    root = tiny_mvtec_factory(tmp_path / "tile", n_test_good=3, n_per_type=3)
    run = tmp_path / "px"
    fit("pixelstats", root, run, build_config("pixelstats", overrides=["image_size=32"]))  # no labelled images
    for split in ("train", "test"):
        build_questions(root, tmp_path / f"{split}.jsonl", split=split, train_per_type=1)
    alone = wq.test_questions([run], tmp_path / "test.jsonl")["results"]["map"]["per_type"]["Defect Classification"]
    assert alone["answered"] == 0  # no labels anywhere: classification abstains
    report = wq.test_questions([run], tmp_path / "test.jsonl", prototypes=tmp_path / "train.jsonl")
    classification = report["results"]["map"]["per_type"]["Defect Classification"]
    assert classification["answered"] == classification["n"] > 0 and report["n_excluded_protocol"] == 0
    with pytest.raises(DataError, match="also asked about"):
        wq.test_questions([run], tmp_path / "test.jsonl", prototypes=tmp_path / "test.jsonl")
