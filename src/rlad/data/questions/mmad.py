"""MMAD's released question file (`mmad.json`) as rlad question records, so a user who has MMAD points
rlad at it and gets the benchmark's protocol: its questions, its seven types, its templates, its
averaging (`rlad.metrics.choice`).

The layout, as MMAD's repository documents and its evaluation scripts read it: one JSON object keyed
by image path relative to the MMAD folder (`<dataset>/<category>/.../<defect type>/<file>`, e.g.
`MVTec-AD/bottle/test/broken_large/000.png`), each value holding

    "conversation"       [{"Question": str, "Options": {"A": str, "B": str, ...}, "Answer": "B", "type": str}, ...]
    "random_templates"   [normal image paths, relative to the MMAD folder]  (the standard 1-shot template: the first)
    "similar_templates"  [the same, most similar first]
    "mask_path"          the ground-truth mask, when the image is defective (optional)

Dataset and category are the first two path parts; an image is normal when its parent folder is
`good` (MMAD's scripts test for "good" anywhere in the path). The mask path is resolved against the
category folder, then the MMAD folder, and left empty when neither holds it: questions do not need
it. Problems are reported per image key and question number, all at once.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlad.data.questions.records import MCQRecord, check_options
from rlad.errors import DataError

TEMPLATE_MODES = ("random", "similar")
MAX_LISTED = 20


def _mask_path(root: Path, parts: list[str], mask: str) -> str:
    for base in (root.joinpath(*parts[:2]), root.joinpath(*parts[:3]), root):
        if (base / mask).is_file():
            return str(base / mask)
    return ""


def _questions_of(key: str, entry, root: Path, templates: str, check_files: bool) -> list[MCQRecord]:
    parts = key.split("/")
    if len(parts) < 3:
        raise ValueError("the key is not an image path <dataset>/<category>/.../<file>")
    if not isinstance(entry, dict) or not isinstance(entry.get("conversation"), list):
        raise ValueError("has no \"conversation\" list")
    image = root / key
    if check_files and not image.is_file():
        raise ValueError(f"image not found: {image}")
    template_paths = entry.get(f"{templates}_templates", [])
    if not isinstance(template_paths, list):
        raise ValueError(f"\"{templates}_templates\" is not a list")
    template_files = tuple(str(root / t) for t in template_paths)
    if check_files:
        missing = [t for t in template_files if not Path(t).is_file()]
        if missing:
            raise ValueError(f"template image not found: {missing[0]}")
    mask = entry.get("mask_path") or ""
    mask = _mask_path(root, parts, mask) if isinstance(mask, str) and mask else ""
    records = []
    for number, qa in enumerate(entry["conversation"], start=1):
        try:
            if not isinstance(qa, dict):
                raise ValueError("is not an object")
            options = qa.get("Options")
            if not isinstance(options, dict):
                raise ValueError(f"\"Options\" must be an object of lettered texts, got {options!r}")
            letters = list(options)
            expected = [chr(ord("A") + i) for i in range(len(letters))]
            if letters != expected:
                raise ValueError(f"option letters {letters} are not {expected}")
            answer = str(qa.get("Answer", "")).strip().strip(".()").strip()
            texts, answer = check_options(list(options.values()), answer)
            question, kind = qa.get("Question"), qa.get("type")
            if not isinstance(question, str) or not question.strip():
                raise ValueError("\"Question\" is missing or empty")
            if not isinstance(kind, str) or not kind.strip():
                raise ValueError("\"type\" is missing or empty")
        except ValueError as exc:
            raise ValueError(f"question {number}: {exc}") from None
        records.append(MCQRecord(
            id=f"{key}#{number}", image=str(image), templates=template_files, question=question, options=texts,
            answer=answer, type=kind, category=parts[1], dataset=parts[0], defect_type=parts[-2], mask=mask,
            source="mmad"))
    return records


def load_mmad(path: Path | str, templates: str = "random", root: Path | str | None = None,
              check_files: bool = True) -> list[MCQRecord]:
    """Every question of an `mmad.json` (image paths relative to `root`, default: the file's folder);
    `templates` picks MMAD's "random" (its default protocol) or "similar" templates."""
    path = Path(path)
    if templates not in TEMPLATE_MODES:
        raise DataError(f"templates {templates!r} is not one of {', '.join(TEMPLATE_MODES)}")
    if not path.is_file():
        raise DataError(f"{path}: MMAD question file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected MMAD's layout, one JSON object keyed by image path")
    root = Path(root) if root is not None else path.parent
    records, problems = [], []
    for key, entry in data.items():
        try:
            records += _questions_of(key, entry, root, templates, check_files)
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
    if problems:
        shown = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else [])
        raise DataError(f"{path}: {len(problems)} bad MMAD entr{'y' if len(problems) == 1 else 'ies'}:\n  "
                        + "\n  ".join(shown))
    if not records:
        raise DataError(f"{path}: holds no questions")
    return records
