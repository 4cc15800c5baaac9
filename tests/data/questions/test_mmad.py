"""MMAD's released layout (`mmad.json`): one object keyed by image path, each with a "conversation"
list, template lists and a mask path. The file here is written by the test in that layout."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from rlad.data.questions.mmad import load_mmad
from rlad.data.questions.records import load_question_file
from rlad.errors import DataError
from rlad.metrics.choice import choice_accuracy

IMAGES = [
    "MVTec-AD/bottle/test/broken_large/000.png",
    "MVTec-AD/bottle/test/good/001.png",
    "MVTec-AD/bottle/train/good/010.png",
    "MVTec-AD/bottle/train/good/011.png",
    "MVTec-AD/bottle/ground_truth/broken_large/000_mask.png",
    "VisA/candle/test/good/002.png",
    "VisA/candle/train/good/020.png",
]


def qa(question, options, answer, kind):
    return {"Question": question, "Options": options, "Answer": answer, "type": kind}


def mmad_layout(root):
    for rel in IMAGES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / rel)
    return {
        "MVTec-AD/bottle/test/broken_large/000.png": {
            "image_path": "MVTec-AD/bottle/test/broken_large/000.png",
            "mask_path": "ground_truth/broken_large/000_mask.png",
            "random_templates": ["MVTec-AD/bottle/train/good/010.png"],
            "similar_templates": ["MVTec-AD/bottle/train/good/011.png", "MVTec-AD/bottle/train/good/010.png"],
            "conversation": [
                qa("Any flaw on the item?", {"A": "Yes.", "B": "No."}, "A", "Anomaly Detection"),
                qa("Which flaw?", {"A": "Crack", "B": "Large break", "C": "Stain", "D": "Hole"}, "B", "Defect Classification"),
                qa("How is the mouth shaped?", {"A": "Round", "B": "Square"}, "A", "Object Structure"),
                qa("What colour is it?", {"A": "Green", "B": "Brown", "C": "Clear"}, "B", "Object Details"),
            ],
        },
        "MVTec-AD/bottle/test/good/001.png": {
            "random_templates": ["MVTec-AD/bottle/train/good/011.png"],
            "similar_templates": ["MVTec-AD/bottle/train/good/010.png"],
            "conversation": [qa("Any flaw on the item?", {"A": "No.", "B": "Yes."}, "A", "Anomaly Detection")],
        },
        "VisA/candle/test/good/002.png": {
            "random_templates": ["VisA/candle/train/good/020.png"],
            "similar_templates": ["VisA/candle/train/good/020.png"],
            "conversation": [qa("Any flaw on the item?", {"A": "Yes.", "B": "No."}, "B", "Anomaly Detection")],
        },
    }


@pytest.fixture
def mmad(tmp_path):
    root = tmp_path / "MMAD"
    data = mmad_layout(root)
    path = root / "mmad.json"
    path.write_text(json.dumps(data, indent=4))  # pretty-printed, as released
    return path, data


def test_loader_reads_every_question_with_its_protocol_fields(mmad):
    path, _ = mmad
    records = load_mmad(path)
    assert len(records) == 6
    first = records[0]
    assert first.dataset == "MVTec-AD" and first.category == "bottle" and first.defect_type == "broken_large"
    assert first.options == ("Yes.", "No.") and first.answer == "A" and first.source == "mmad"
    assert first.image == str(path.parent / "MVTec-AD/bottle/test/broken_large/000.png")
    assert first.templates == (str(path.parent / "MVTec-AD/bottle/train/good/010.png"),)  # MMAD's default: random
    assert first.mask == str(path.parent / "MVTec-AD/bottle/ground_truth/broken_large/000_mask.png")
    assert not first.normal and records[4].normal and records[5].dataset == "VisA"
    assert [r.type for r in records[:4]] == ["Anomaly Detection", "Defect Classification", "Object Structure",
                                           "Object Details"]
    assert len({r.id for r in records}) == 6
    similar = load_mmad(path, templates="similar")
    assert similar[0].templates[0].endswith("train/good/011.png") and len(similar[0].templates) == 2


def test_question_files_are_recognised_by_content(mmad):
    path, _ = mmad
    assert load_question_file(path) == load_mmad(path)
    one_line = path.with_name("compact.json")
    one_line.write_text(json.dumps(json.loads(path.read_text())))
    assert load_question_file(one_line) == load_mmad(one_line)


def test_mmad_scoring_merges_object_types_and_balances_detection(mmad):
    path, _ = mmad
    records = load_mmad(path)
    given = ["B", "B", "A", "A", "A", "A"]  # detection wrong on the defect, right on the normal bottle; candle wrong
    result = choice_accuracy(given, [r.answer for r in records], [r.type for r in records],
                             [r.dataset for r in records], [r.normal for r in records])
    bottle = result["per_dataset"]["MVTec-AD"]["tasks"]
    # Object Structure (right) and Object Details (wrong) are one task, "Object Analysis": 1/2.
    assert bottle == {"Anomaly Detection": 0.5, "Defect Classification": 1.0, "Object Analysis": 0.5}
    assert result["per_dataset"]["VisA"]["tasks"] == {"Anomaly Detection": 0.0}
    assert result["accuracy"] == pytest.approx(((0.5 + 1.0 + 0.5) / 3 + 0.0) / 2)


def test_bad_entries_are_all_reported_by_key_and_question(mmad):
    path, data = mmad
    key = "MVTec-AD/bottle/test/broken_large/000.png"
    data[key]["conversation"][1]["Options"] = {"A": "Crack", "C": "Stain"}
    data[key]["conversation"][2]["Answer"] = "E"
    data["MVTec-AD/bottle/test/good/001.png"]["random_templates"] = ["MVTec-AD/bottle/train/good/999.png"]
    data["no/such/image.png"] = {"conversation": []}
    data["flat.png"] = {"conversation": []}
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        load_mmad(path)
    message = str(info.value)
    assert "4 bad MMAD entries" in message
    assert f"{key}: question 2: option letters ['A', 'C'] are not ['A', 'B']" in message
    assert "MVTec-AD/bottle/test/good/001.png: template image not found" in message
    assert "no/such/image.png: image not found" in message
    assert "flat.png: the key is not an image path" in message


def test_not_mmad(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="expected MMAD's layout"):
        load_mmad(tmp_path / "list.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        load_mmad(tmp_path / "broken.json")
    with pytest.raises(DataError, match="templates 'best'"):
        load_mmad(tmp_path / "broken.json", templates="best")
