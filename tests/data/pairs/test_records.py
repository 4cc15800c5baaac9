"""Pair records, their JSONL round trip, validation with line numbers, and selection/splitting
(rlad.data.pairs.records)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlad.data.pairs.builders import build_pairs
from rlad.data.pairs.records import PairRecord, load_pairs, split_fraction, write_pairs
from rlad.errors import DataError


def test_jsonl_round_trip_and_flat_schema(tiny_mvtec, tmp_path):
    out = tmp_path / "sets" / "pairs.jsonl"
    out.parent.mkdir()
    records, _ = build_pairs(tiny_mvtec, out, synthetic=4, seed=3)
    assert load_pairs(out) == records
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:  # flat: scalars and short lists of scalars only (pandas or `datasets` read it as a table)
        assert all(not isinstance(v, (dict, list)) or all(not isinstance(x, (dict, list)) for x in v) for v in row.values())
        assert row["label"] == int(row["box"] != [0, 0, 0, 0])
    synthetic = [row for row in rows if row["source"] != "real"]
    assert len(synthetic) == 4
    assert all(not Path(row["query"]).is_absolute() for row in synthetic)  # inside the pair folder: relative
    assert all(Path(row["reference"]).is_absolute() for row in rows)


def test_pair_folder_can_move_as_a_whole(tiny_mvtec, tmp_path):
    out = tmp_path / "a" / "pairs.jsonl"
    out.parent.mkdir()
    records, _ = build_pairs(tiny_mvtec, out, synthetic=2)
    moved = tmp_path / "b"
    shutil.copytree(out.parent, moved)
    shutil.rmtree(out.parent)
    again = load_pairs(moved / "pairs.jsonl")
    assert [r.id for r in again] == [r.id for r in records]
    assert all(Path(r.query).is_file() for r in again)


def test_split_fraction_is_stratified_and_disjoint(tiny_mvtec, tmp_path):
    records, _ = build_pairs(tiny_mvtec, tmp_path / "p.jsonl", reference="random")
    first, rest = split_fraction(records, 0.3, seed=0)
    assert {r.id for r in first}.isdisjoint({r.id for r in rest})
    assert len(first) + len(rest) == len(records)
    assert sum(r.label for r in first) == round(0.3 * sum(r.label for r in records))


def _rewrite_line(path: Path, index: int, change) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[index])
    change(row)
    lines[index] = json.dumps(row) if isinstance(row, dict) else row
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda row: row.update(box=[0, 0, 500, 10]), "outside the query image"),
        (lambda row: row.update(box=[10, 10, 5, 20]), "not a box"),
        (lambda row: row.update(query="missing/nowhere.png"), "query image not found"),
        (lambda row: row.update(label=0), "contradicts box"),
        (lambda row: row.pop("reference"), "missing field"),
        (lambda row: row.update(query_size=[48, 64, 3]), "query_size must be a list of 2"),
        (lambda row: row.update(extra=1), "unknown field"),
    ],
)
def test_bad_records_are_reported_with_their_line_number(tiny_mvtec, tmp_path, change, message):
    out = tmp_path / "p.jsonl"
    build_pairs(tiny_mvtec, out, reference="random")
    defective_line = next(i for i, line in enumerate(out.read_text().splitlines()) if '"label": 1' in line)
    _rewrite_line(out, defective_line, change)
    with pytest.raises(DataError) as info:
        load_pairs(out)
    assert f"line {defective_line + 1}:" in str(info.value)
    assert message in str(info.value)


def test_invalid_json_and_empty_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1\n')
    with pytest.raises(DataError, match="line 1: not valid JSON"):
        load_pairs(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no pair records"):
        load_pairs(empty)
    with pytest.raises(DataError, match="not found"):
        load_pairs(tmp_path / "absent.jsonl")


def test_duplicate_ids_are_refused(tmp_path, tiny_mvtec):
    records, _ = build_pairs(tiny_mvtec, tmp_path / "p.jsonl", reference="random")
    with pytest.raises(DataError, match="more than once"):
        write_pairs([records[0], records[0]], tmp_path / "dup.jsonl")


def test_record_sizes_must_match_the_image(tiny_mvtec, tmp_path):
    out = tmp_path / "p.jsonl"
    build_pairs(tiny_mvtec, out, reference="random")
    _rewrite_line(out, 0, lambda row: row.update(reference_size=[10, 10]))
    with pytest.raises(DataError, match="line 1: reference_size"):
        load_pairs(out)
    assert load_pairs(out, check_files=False)[0].reference_size == (10, 10)


def test_pair_record_label_follows_the_box():
    record = PairRecord("x", "r.png", "q.png", (0, 0, 0, 0), (4, 4), (4, 4), "c", "good")
    assert record.label == 0
    assert PairRecord("y", "r.png", "q.png", (0, 0, 2, 2), (4, 4), (4, 4), "c", "d").label == 1
