"""Multiple-choice inspection questions (AnomalyR1's task, MMAD's format): the record and its JSONL file.

One line per question; every field is a JSON scalar or a short list, so pandas
(`pd.read_json(path, lines=True)`) or `datasets.load_dataset("json", data_files=path)` read the file
as a table without any rlad code:

    id           "magnetic_tile/blowhole/exp1_num_4/defect-classification"   unique within a file
    image        path of the image the question is about (the query)
    templates    paths of defect-free template images of the same product (the first one is the
                 1-shot template); [] when there are none
    question     the question text
    options      option texts, lettered A, B, C, ... in this order (2 to 26 options)
    answer       the correct letter
    type         question type; rlad writes MMAD's names (`QUESTION_TYPES`), any other name is kept
    category     product category (folder name)
    dataset      source dataset: MMAD averages over question types within a dataset, then over datasets
    defect_type  "good" for a defect-free image, else its defect type (the folder name)
    mask         path of the image's ground-truth mask, "" when there is none
    source       "folder" (built by `rlad data questions`) or "mmad" (read from MMAD's JSON)

Paths follow the pair files: inside the JSONL's folder they are stored relative to it, elsewhere
absolute; `load_questions` resolves both and reports every bad line, with its number, in one
`DataError`.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from rlad.data.paths import relative_to
from rlad.errors import DataError
from rlad.metrics.choice import DISCRIMINATION_TASK

FIELDS = ("id", "image", "templates", "question", "options", "answer", "type", "category", "dataset",
          "defect_type", "mask", "source")
SOURCES = ("folder", "mmad")
NORMAL = "good"
LETTERS = string.ascii_uppercase

DEFECT_CLASSIFICATION = "Defect Classification"
DEFECT_LOCALIZATION = "Defect Localization"
OBJECT_CLASSIFICATION = "Object Classification"
# MMAD's seven subtasks, by the names its JSON uses; the first one is scored balanced.
QUESTION_TYPES = (DISCRIMINATION_TASK, DEFECT_CLASSIFICATION, DEFECT_LOCALIZATION, "Defect Description",
                  "Defect Analysis", OBJECT_CLASSIFICATION, "Object Analysis")


def letters_for(n: int) -> tuple[str, ...]:
    """The option letters of a question with n options: A, B, ..."""
    return tuple(LETTERS[:n])


@dataclass(frozen=True)
class MCQRecord:
    id: str
    image: str
    question: str
    options: tuple[str, ...]
    answer: str
    type: str
    category: str
    dataset: str
    defect_type: str
    templates: tuple[str, ...] = ()
    mask: str = ""
    source: str = "folder"

    @property
    def letters(self) -> tuple[str, ...]:
        return letters_for(len(self.options))

    @property
    def normal(self) -> bool:
        return self.defect_type == NORMAL

    @property
    def answer_text(self) -> str:
        return self.options[self.letters.index(self.answer)]

    def to_json(self, base_dir: Path | None = None) -> dict:
        def path(value: str) -> str:
            # Resolved first, so a file outside `base_dir` is written as an absolute path.
            return relative_to(Path(value).resolve(), base_dir) if base_dir is not None and value else value

        row = {name: getattr(self, name) for name in FIELDS}
        row.update(image=path(self.image), templates=[path(t) for t in self.templates], options=list(self.options),
                   mask=path(self.mask))
        return row


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_options(options, answer) -> tuple[tuple[str, ...], str]:
    """Options as a tuple of distinct non-empty texts (2 to 26) and the answer as one of their letters;
    ValueError naming the problem otherwise."""
    if not isinstance(options, (list, tuple)) or not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"options must be a list of 2 to {len(LETTERS)} option texts, got {options!r}")
    texts = tuple(_text(o, "every option") for o in options)
    normalised = [t.strip().lower() for t in texts]
    if len(set(normalised)) != len(normalised):
        raise ValueError(f"options repeat a text: {list(texts)}")
    letters = letters_for(len(texts))
    if answer not in letters:
        raise ValueError(f"answer {answer!r} is not one of the option letters {', '.join(letters)}")
    return texts, answer


def _resolve(value: str, base_dir: Path, what: str, check_files: bool) -> str:
    path = Path(value) if os.path.isabs(value) else base_dir / value
    if check_files and not path.is_file():
        raise ValueError(f"{what} not found: {path}")
    return str(path)


def record_from_json(row: dict, base_dir: Path, check_files: bool = True) -> MCQRecord:
    """One JSON object -> MCQRecord; ValueError with the problem (the caller adds the line)."""
    from rlad.data.jsonl import check_fields

    check_fields(row, FIELDS, optional=("templates", "mask", "source"))
    options, answer = check_options(row["options"], row["answer"])
    templates = row.get("templates", [])
    if not isinstance(templates, list):
        raise ValueError(f"templates must be a list of image paths, got {templates!r}")
    source = row.get("source", "folder")
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {', '.join(SOURCES)}")
    mask = row.get("mask", "") or ""
    if not isinstance(mask, str):
        raise ValueError(f"mask must be a path or \"\", got {mask!r}")
    return MCQRecord(
        id=_text(row["id"], "id"),
        image=_resolve(_text(row["image"], "image"), base_dir, "image", check_files),
        templates=tuple(_resolve(_text(t, "every template"), base_dir, "template image", check_files) for t in templates),
        question=_text(row["question"], "question"), options=options, answer=answer,
        type=_text(row["type"], "type"), category=_text(row["category"], "category"),
        dataset=_text(row["dataset"], "dataset"), defect_type=_text(row["defect_type"], "defect_type"),
        mask=_resolve(mask, base_dir, "mask", check_files) if mask else "", source=source,
    )


def write_questions(records: Sequence[MCQRecord], path: Path | str) -> Path:
    """Write records as JSONL (atomically: a kill never leaves half a file)."""
    from rlad.data.jsonl import write_records

    path = Path(path)
    return write_records([r.to_json(path.parent) for r in records], path, "question")


def load_questions(path: Path | str, check_files: bool = True) -> list[MCQRecord]:
    """Read an rlad question file. Every bad line is reported (up to 20) in one DataError with its number."""
    from rlad.data.jsonl import read_records

    path = Path(path)
    return read_records(path, lambda row, _: record_from_json(row, path.parent, check_files), "question")


def load_question_file(path: Path | str, templates: str = "random", check_files: bool = True) -> list[MCQRecord]:
    """Questions from an rlad JSONL file, or from MMAD's released `mmad.json` (recognised by content:
    one JSON object keyed by image path; `templates` picks its "random" or "similar" templates)."""
    path = Path(path)
    if path.is_file() and _looks_like_mmad(path):
        from rlad.data.questions.mmad import load_mmad

        return load_mmad(path, templates=templates, check_files=check_files)
    return load_questions(path, check_files=check_files)


def _looks_like_mmad(path: Path) -> bool:
    """MMAD's file is one JSON object (often pretty-printed over many lines), ours one object per line."""
    with open(path, encoding="utf-8") as handle:
        first = next((line.strip() for line in handle if line.strip()), "")
    if first == "{":
        return True
    if not first.startswith("{"):
        return False
    try:
        import json

        row = json.loads(first)
    except ValueError:
        return True  # a JSON object that does not end on its first line
    return isinstance(row, dict) and "question" not in row and any(
        isinstance(v, dict) and "conversation" in v for v in row.values())


def categories_of(records: Iterable[MCQRecord]) -> list[str]:
    return sorted({r.category for r in records})


def select(records: Sequence[MCQRecord], types: Iterable[str] | None = None,
           categories: Iterable[str] | None = None) -> list[MCQRecord]:
    """Records of some question types and categories (all when None); unknown names are an error
    (a typo would silently select nothing)."""
    out = list(records)
    for field, wanted in (("type", types), ("category", categories)):
        if wanted is None:
            continue
        wanted = set(wanted)
        known = {getattr(r, field) for r in records}
        unknown = sorted(wanted - known)
        if unknown:
            raise DataError(f"unknown {field}(s) {', '.join(unknown)}; the questions have: {', '.join(sorted(known))}")
        out = [r for r in out if getattr(r, field) in wanted]
    return out
