"""Record files as JSONL: one JSON object per line, read with every bad line reported (with its number)
in one error, written atomically. Pair files (`pairs.records`) and question files
(`questions.records`) share these two functions; each brings its own row parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from rlad.errors import DataError

T = TypeVar("T")
MAX_LISTED = 20


def read_records(path: Path | str, parse: Callable[[dict, int], T], what: str) -> list[T]:
    """Every record of a JSONL file. `parse(row, line_number)` turns one JSON object into a record or
    raises ValueError / KeyError / TypeError with the problem; records need a unique `id`. All bad
    lines (up to 20 listed) go into one DataError naming the file and each line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found" + (" (it is a folder)" if path.is_dir() else ""))
    records, problems, seen = [], [], {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: not valid JSON ({exc.msg})")
                continue
            try:
                record = parse(row, number)
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"line {number}: {exc}")
                continue
            if record.id in seen:
                problems.append(f"line {number}: id {record.id!r} already used on line {seen[record.id]}")
                continue
            seen[record.id] = number
            records.append(record)
    if problems:
        shown = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                         if len(problems) > MAX_LISTED else [])
        raise DataError(f"{path}: {len(problems)} bad {what} record(s):\n  " + "\n  ".join(shown))
    if not records:
        raise DataError(f"{path}: holds no {what} records")
    return records


def check_fields(row, fields: Sequence[str], optional: Sequence[str] = ()) -> None:
    """ValueError unless `row` is a JSON object holding every field of `fields` not in `optional`, and
    nothing else."""
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    missing = [k for k in fields if k not in row and k not in optional]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(row) - set(fields))
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")


def write_records(rows: Sequence[dict], path: Path | str, what: str) -> Path:
    """Write JSON objects (each with a unique "id") one per line, atomically: a kill never leaves half a file."""
    from rlad.engine.run import atomic_write_bytes

    path = Path(path)
    seen: set = set()
    for row in rows:
        if row["id"] in seen:
            raise DataError(f"{path}: {what} id {row['id']!r} appears more than once")
        seen.add(row["id"])
    lines = [json.dumps(row) for row in rows]
    atomic_write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())
    return path
