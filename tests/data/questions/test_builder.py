"""Questions built from MVTec-layout folders: only truthful types, right answers read off the labels and
masks, distractors never right, options shuffled with the seed, templates from train/good, and the
train / dev / test splits of test/ disjoint."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rlad.data.folder import discover
from rlad.data.images import load_mask
from rlad.data.questions.builder import BUILT_TYPES, build_questions, partition
from rlad.data.questions.records import load_questions
from rlad.data.questions.regions import REGION_NAMES, parse_region, region_mass
from rlad.errors import ConfigError, DataError


@pytest.fixture
def two_categories(tmp_path, tiny_mvtec_factory):
    root = tmp_path / "root"
    tiny_mvtec_factory(root / "tile", n_test_good=3, n_per_type=3)
    tiny_mvtec_factory(root / "metal_plate", defect_types=("dent",), n_test_good=5, n_per_type=2, seed=1)
    return root


def by_type(records, kind):
    return [r for r in records if r.type == kind]


def test_types_answers_and_distractors_follow_the_labels(two_categories, tmp_path):
    records, summary = build_questions(two_categories, tmp_path / "q.jsonl")
    assert load_questions(tmp_path / "q.jsonl") == records
    assert summary.n_questions == len(records)
    categories = {"tile": "tile", "metal_plate": "metal plate"}
    for r in records:
        assert r.dataset == "root" and Path(r.image).parts[-3] == "test"
        assert len(r.templates) == 1 and Path(r.templates[0]).parts[-3:-1] == ("train", "good")
        assert Path(r.templates[0]).parts[-4] == r.category  # the template shows the same product

    detection = by_type(records, "Anomaly Detection")
    for r in detection:
        assert sorted(r.options) == ["No", "Yes"] and r.answer_text == ("No" if r.normal else "Yes")
    # Balanced: as many normal as defective images per category (tile 3 vs 6, metal_plate 5 vs 2).
    assert Counter((r.category, r.normal) for r in detection) == {("tile", True): 3, ("tile", False): 3,
                                                                  ("metal_plate", True): 2, ("metal_plate", False): 2}

    classification = by_type(records, "Defect Classification")
    assert {r.category for r in classification} == {"tile"}  # metal_plate has one defect type: not asked
    for r in classification:
        assert sorted(r.options) == ["hole", "scratch"] and r.answer_text == r.defect_type

    localization = by_type(records, "Defect Localization")
    assert localization
    for r in localization:
        mass = region_mass(load_mask(r.mask) > 0)
        assert r.answer_text == max(mass, key=mass.get)
        for text in r.options:
            assert parse_region(text) == text
            if text != r.answer_text:
                assert mass[text] == 0  # a distractor never touches the defect

    objects = by_type(records, "Object Classification")
    assert len(objects) == sum(len(discover(two_categories / c).test) for c in categories)
    for r in objects:
        assert sorted(r.options) == sorted(categories.values()) and r.answer_text == categories[r.category]
    assert summary.per_category["tile"]["Defect Classification"] == len(classification)


def test_one_category_gets_no_object_question_and_letters_are_shuffled(tiny_mvtec, tmp_path):
    records, _ = build_questions(tiny_mvtec, tmp_path / "q.jsonl", balance=False)
    assert "Object Classification" not in {r.type for r in records}
    assert len(by_type(records, "Anomaly Detection")) == len(discover(tiny_mvtec).test)
    again, _ = build_questions(tiny_mvtec, tmp_path / "again.jsonl", balance=False)
    other, _ = build_questions(tiny_mvtec, tmp_path / "other.jsonl", balance=False, seed=5)
    assert again == records  # deterministic per seed
    assert [r.options for r in other] != [r.options for r in records]
    assert len({r.answer for r in records}) > 1  # the right answer is not always the same letter


def test_splits_partition_test_once_per_dataset(two_categories, tmp_path):
    folder = discover(two_categories / "tile")
    parts = partition(folder.test, train_per_type=1, dev_fraction=0.3, protocol_seed=0)
    paths = [{s.path for s in parts[name]} for name in ("dev", "train", "test")]
    assert sum(len(p) for p in paths) == len(folder.test) and set().union(*paths) == {s.path for s in folder.test}
    assert Counter(s.defect_type for s in parts["train"]) == {"good": 1, "hole": 1, "scratch": 1}
    files = {}
    for split in ("train", "dev", "test"):
        records, _ = build_questions(two_categories, tmp_path / f"{split}.jsonl", split=split, train_per_type=1,
                                     dev_fraction=0.3)
        files[split] = {r.image for r in records}
    assert not files["train"] & files["test"] and not files["dev"] & files["test"] and not files["train"] & files["dev"]
    # The development share is the one `rlad fit --set protocol.dev_fraction=0.3` draws.
    from rlad.data.split import draw_dev

    assert {str(s.path) for s in draw_dev(folder.test, 0.3, 0)} <= files["dev"]


def test_a_defect_touching_every_region_gets_no_localization_question(tmp_path, tiny_mvtec_factory):
    root = tiny_mvtec_factory(tmp_path / "c", defect_types=("hole",), n_per_type=1)
    mask = np.full((48, 64), 255, np.uint8)
    from PIL import Image

    Image.fromarray(mask).save(root / "ground_truth" / "hole" / "000_mask.png")
    records, summary = build_questions(root, tmp_path / "q.jsonl")
    assert not by_type(records, "Defect Localization") and summary.skipped_localization == 1


def test_region_names_and_mass():
    values = np.zeros((9, 9))
    values[0, 0] = 1
    values[4, 4] = 2
    mass = region_mass(values)
    assert mass["top left"] == 1 and mass["center"] == 2 and sum(mass.values()) == 3
    assert len(REGION_NAMES) == 9 and len(set(REGION_NAMES)) == 9
    assert parse_region("The top-left corner") == "top left" and parse_region("Centre.") == "center"
    assert parse_region("upper right") == "top right" and parse_region("somewhere") is None


def test_bad_requests(tiny_mvtec, tmp_path):
    with pytest.raises(DataError, match="expected a .jsonl"):
        build_questions(tiny_mvtec, tmp_path / "q.csv")
    with pytest.raises(DataError, match="--train-per-type"):
        build_questions(tiny_mvtec, tmp_path / "q.jsonl", split="train")
    with pytest.raises(DataError, match="--dev-fraction"):
        build_questions(tiny_mvtec, tmp_path / "q.jsonl", split="dev")
    with pytest.raises(DataError, match="cannot be built from folders"):
        build_questions(tiny_mvtec, tmp_path / "q.jsonl", types=["Defect Description"])
    with pytest.raises(ConfigError, match="dev_fraction"):
        build_questions(tiny_mvtec, tmp_path / "q.jsonl", dev_fraction=1.5)
    with pytest.raises(DataError, match="no questions"):
        build_questions(tiny_mvtec, tmp_path / "q.jsonl", types=["Object Classification"])
    assert set(BUILT_TYPES) >= {"Anomaly Detection", "Defect Localization"}
