"""Question records and their JSONL file: round trip, path handling, and every bad line reported with
its number."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from rlad.data.questions.records import (MCQRecord, load_question_file, load_questions, select, write_questions)
from rlad.errors import DataError


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("q.png", "t.png", "m.png"):
        Image.new("RGB", (8, 6)).save(folder / name)
    return folder


def record(images, **changes):
    base = dict(id="c/hole/000/defect-classification", image=str(images / "q.png"), templates=(str(images / "t.png"),),
                question="What kind of defect?", options=("scratch", "hole", "crack"), answer="B",
                type="Defect Classification", category="c", dataset="d", defect_type="hole", mask=str(images / "m.png"))
    return MCQRecord(**{**base, **changes})


def test_round_trip_keeps_every_field_and_stores_paths_relative_to_the_file(images, tmp_path):
    first = record(images)
    second = record(images, id="c/good/001/anomaly-detection", options=("No", "Yes"), answer="A",
                    type="Anomaly Detection", defect_type="good", mask="", templates=())
    out = tmp_path / "q.jsonl"
    write_questions([first, second], out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["image"] == "imgs/q.png" and rows[0]["templates"] == ["imgs/t.png"]
    assert rows[0]["options"] == ["scratch", "hole", "crack"]
    loaded = load_questions(out)
    assert loaded == [first, second]
    assert loaded[0].letters == ("A", "B", "C") and loaded[0].answer_text == "hole"
    assert not loaded[0].normal and loaded[1].normal
    # The file and its images move together.
    moved = tmp_path / "moved"
    (tmp_path / "imgs").rename(tmp_path / "moved_imgs")
    moved.mkdir()
    text = out.read_text().replace("imgs/", "../moved_imgs/")
    (moved / "q.jsonl").write_text(text)
    assert load_questions(moved / "q.jsonl")[0].image.endswith("moved_imgs/q.png")


def test_every_bad_line_is_reported_with_its_number(images, tmp_path):
    good = record(images).to_json()
    lines = [
        json.dumps(good),                                              # 1 fine
        "{not json",                                                   # 2
        json.dumps({k: v for k, v in good.items() if k != "answer"}),  # 3 missing field
        json.dumps({**good, "id": "x3", "colour": "red"}),             # 4 unknown field
        json.dumps({**good, "id": "x4", "answer": "D"}),               # 5 letter beyond the options
        json.dumps({**good, "id": "x5", "answer": "b"}),               # 6 lower-case answer
        json.dumps({**good, "id": "x6", "options": ["hole"]}),         # 7 one option
        json.dumps({**good, "id": "x7", "options": ["hole", "Hole"]}), # 8 repeated option
        json.dumps({**good, "id": "x8", "image": str(images / "nope.png")}),  # 9 missing image
        json.dumps({**good, "id": "x9", "templates": "t.png"}),        # 10 templates not a list
        json.dumps({**good, "id": "x10", "source": "web"}),            # 11 unknown source
        json.dumps(good),                                              # 12 duplicate id
        json.dumps({**good, "id": "x12", "question": "  "}),           # 13 empty question
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_questions(path)
    message = str(info.value)
    assert "12 bad question record(s)" in message
    for number, words in [(2, "not valid JSON"), (3, "missing field(s): answer"), (4, "unknown field(s): colour"),
                          (5, "answer 'D' is not one of the option letters A, B, C"), (6, "answer 'b'"),
                          (7, "options must be a list of 2 to 26 option texts"), (8, "options repeat a text"), (9, "image not found"),
                          (10, "templates must be a list"), (11, "source 'web'"), (12, "id 'c/hole/000/defect-classification' already used on line 1"),
                          (13, "question must be a non-empty string")]:
        assert f"line {number}: {words}" in message, (number, message)
    assert "line 1:" not in message


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no question records"):
        load_questions(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="question file not found"):
        load_questions(tmp_path / "absent.jsonl")


def test_duplicate_ids_are_refused_on_write(images, tmp_path):
    with pytest.raises(DataError, match="appears more than once"):
        write_questions([record(images), record(images)], tmp_path / "q.jsonl")


def test_load_question_file_reads_rlad_jsonl(images, tmp_path):
    write_questions([record(images)], tmp_path / "q.jsonl")
    assert load_question_file(tmp_path / "q.jsonl") == [record(images)]


def test_select_by_type_and_category(images):
    records = [record(images), record(images, id="2", type="Anomaly Detection", options=("Yes", "No"), answer="A"),
               record(images, id="3", category="other")]
    assert [r.id for r in select(records, types=["Anomaly Detection"])] == ["2"]
    assert [r.id for r in select(records, categories=["c"], types=["Defect Classification"])] == [records[0].id]
    with pytest.raises(DataError, match="unknown type"):
        select(records, types=["Anomaly detection"])
