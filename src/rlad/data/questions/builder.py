"""Multiple-choice questions from MVTec-layout folders (`rlad data questions DIR --out Q.jsonl`): only
the question types the folder's labels answer truthfully.

* Anomaly Detection (MMAD's name for anomaly discrimination): "is there a defect?", Yes/No. Balanced:
  the larger of the normal and defective groups of a category is subsampled to the size of the
  smaller (with the seed), so always answering one way scores 50%.
* Defect Classification: defective images of a category with two or more defect types; the options
  are the category's defect types (folder names, "_" read as a space), the right one plus up to
  `max_options - 1` others.
* Defect Localization: defective images with a mask; the right option is the region of a 3 x 3 grid
  (`regions`) holding the most defect pixels, the distractors are regions holding no defect pixel at
  all, so no option is ambiguous even when a large defect spreads over several regions. A defect
  that touches every region gets no localization question.
* Object Classification: every image, when the root holds two or more categories; the options are
  category names.
Options are shuffled with the seed; each question gets one template image from the category's
`train/good` (random, or the most similar one) for the 1-shot protocol.

Which images questions are built from (the protocol, `partition`): only `test/` images are asked
about; templates come from `train/good`. `test/` is cut ONCE per dataset, with `protocol_seed`: a
development share (`dev_fraction` of each group, drawn exactly as `rlad fit --set
protocol.dev_fraction` draws it), then `train_per_type` images of each group (normal and every defect
type) for training questions, then the rest for evaluation. `--split train`, `--split dev` and
`--split test` with the same `--train-per-type`, `--dev-fraction` and `--protocol-seed` are disjoint,
so GRPO on the training questions never sees an image the evaluation questions ask about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rlad.data.questions.records import (DEFECT_CLASSIFICATION, DEFECT_LOCALIZATION, NORMAL, OBJECT_CLASSIFICATION,
                                         MCQRecord, letters_for, write_questions)
from rlad.errors import DataError
from rlad.metrics.choice import DISCRIMINATION_TASK

SPLITS = ("test", "train", "dev")
BUILT_TYPES = (DISCRIMINATION_TASK, DEFECT_CLASSIFICATION, DEFECT_LOCALIZATION, OBJECT_CLASSIFICATION)
QUESTIONS = {
    DISCRIMINATION_TASK: "Is there a defect in the inspected image?",
    DEFECT_CLASSIFICATION: "What kind of defect does the inspected image show?",
    DEFECT_LOCALIZATION: "Where in the inspected image is the defect?",
    OBJECT_CLASSIFICATION: "Which product does the inspected image show?",
}
YES, NO = "Yes", "No"
_SLUGS = {t: t.lower().replace(" ", "-") for t in BUILT_TYPES}


def humanise(name: str) -> str:
    """A folder name as an option text: "broken_large" -> "broken large"."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def partition(samples: Sequence, train_per_type: int, dev_fraction: float, protocol_seed: int) -> dict[str, list]:
    """{"dev", "train", "test"} samples of one category's `test/` (see the module docstring)."""
    from rlad.data.split import draw_dev

    if train_per_type < 0:
        raise DataError(f"--train-per-type must be >= 0, got {train_per_type}")
    dev = draw_dev(list(samples), dev_fraction, protocol_seed)
    dev_paths = {s.path for s in dev}
    rest = [s for s in samples if s.path not in dev_paths]
    rng = np.random.default_rng([protocol_seed, 7253])
    train = []
    groups: dict[str, list] = {}
    for sample in rest:
        groups.setdefault(sample.defect_type, []).append(sample)
    for name in sorted(groups):
        members = groups[name]
        take = min(train_per_type, len(members) - 1)  # never the whole group: evaluation keeps one
        picks = rng.choice(len(members), size=take, replace=False) if take > 0 else []
        train += [members[i] for i in sorted(picks)]
    train_paths = {s.path for s in train}
    return {"dev": dev, "train": train, "test": [s for s in rest if s.path not in train_paths]}


def _lettered(rng: np.random.Generator, right: str, distractors: Sequence[str], max_options: int) -> tuple[tuple, str]:
    """(shuffled options, letter of `right`) with up to `max_options - 1` distractors drawn at random."""
    distractors = [d for d in distractors if d != right]
    take = min(len(distractors), max_options - 1)
    chosen = [distractors[i] for i in rng.choice(len(distractors), size=take, replace=False)] if take else []
    options = [right, *chosen]
    order = rng.permutation(len(options))
    options = tuple(options[i] for i in order)
    return options, letters_for(len(options))[options.index(right)]


def _localization(sample, rng: np.random.Generator, max_options: int):
    """(options, answer) of a localization question, or None when no region is free of the defect."""
    from rlad.data.images import load_mask
    from rlad.data.questions.regions import region_mass

    mass = region_mass(load_mask(sample.mask_path, expected_size=sample.size) > 0)
    total = sum(mass.values())
    if total == 0:
        return None
    right = max(mass, key=mass.get)
    empty = [name for name, value in mass.items() if value == 0]
    if not empty:
        return None
    return _lettered(rng, right, empty, max_options)


@dataclass
class QuestionBuildSummary:
    out: str
    split: str
    n_questions: int
    per_category: dict = field(default_factory=dict)
    skipped_localization: int = 0
    """Defective images with a mask that got no localization question (the defect touches every region)."""
    images: int = 0

    def rows(self) -> list[dict]:
        """One table row per category: the number of questions of each type."""
        return [{"category": category, **counts} for category, counts in self.per_category.items()]


def category_questions(folder, samples: Sequence, rng: np.random.Generator, dataset: str, categories: Sequence[str],
                       types: Sequence[str], reference: str, balance: bool, max_options: int) -> tuple[list, int]:
    """The questions about `samples` (one category's images of the chosen split), and how many
    defective images got no localization question."""
    from rlad.data.pairs.references import ReferencePicker
    from rlad.engine.progress import progress

    picker = ReferencePicker(list(folder.train), reference, rng, folder.category)
    defect_types = [humanise(t) for t in folder.defect_types]
    discrimination = list(samples)
    if balance:
        normals = [s for s in samples if s.label == 0]
        defects = [s for s in samples if s.label == 1]
        n = min(len(normals), len(defects))
        if n:
            discrimination = [group[i] for group in (normals, defects)
                              for i in sorted(rng.choice(len(group), size=n, replace=False))]
    asked_discrimination = {s.path for s in discrimination}
    records, skipped = [], 0
    for sample in progress(samples, desc=f"{folder.category}: questions"):
        template = str(picker.pick(sample.path, sample.size).path)
        common = dict(image=str(sample.path), templates=(template,), category=folder.category, dataset=dataset,
                      defect_type=sample.defect_type, mask=str(sample.mask_path or ""))
        asked: list[tuple[str, tuple, str]] = []
        if DISCRIMINATION_TASK in types and sample.path in asked_discrimination:
            options = tuple(rng.permutation([YES, NO]).tolist())
            asked.append((DISCRIMINATION_TASK, options, letters_for(2)[options.index(NO if sample.label == 0 else YES)]))
        if DEFECT_CLASSIFICATION in types and sample.label == 1 and len(defect_types) >= 2:
            asked.append((DEFECT_CLASSIFICATION, *_lettered(rng, humanise(sample.defect_type), defect_types, max_options)))
        if DEFECT_LOCALIZATION in types and sample.label == 1 and sample.mask_path is not None:
            found = _localization(sample, rng, max_options)
            if found is None:
                skipped += 1
            else:
                asked.append((DEFECT_LOCALIZATION, *found))
        if OBJECT_CLASSIFICATION in types and len(categories) >= 2:
            asked.append((OBJECT_CLASSIFICATION, *_lettered(rng, humanise(folder.category),
                                                             [humanise(c) for c in categories], max_options)))
        for kind, options, answer in asked:
            records.append(MCQRecord(
                id=f"{folder.category}/{sample.defect_type}/{sample.path.stem}/{_SLUGS[kind]}",
                question=QUESTIONS[kind], options=options, answer=answer, type=kind, **common))
    return records, skipped


def build_questions(root: Path | str, out: Path | str, split: str = "test", train_per_type: int = 0,
                    dev_fraction: float = 0.0, protocol_seed: int = 0, seed: int = 0, reference: str = "random",
                    balance: bool = True, types: Sequence[str] | None = None,
                    max_options: int = 4) -> tuple[list[MCQRecord], QuestionBuildSummary]:
    """Questions about the `split` images of every category under `root`, written to `out`."""
    from rlad.data.folder import discover, discover_categories

    out = Path(out)
    if out.suffix.lower() != ".jsonl":
        raise DataError(f"--out {out}: expected a .jsonl file name")
    if split not in SPLITS:
        raise DataError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    if split == "train" and train_per_type <= 0:
        raise DataError("--split train needs --train-per-type N > 0 (images per group set aside for training questions)")
    if split == "dev" and dev_fraction <= 0:
        raise DataError("--split dev needs --dev-fraction > 0")
    if max_options < 2:
        raise DataError(f"--max-options must be >= 2, got {max_options}")
    types = list(types) if types is not None else list(BUILT_TYPES)
    unknown = sorted(set(types) - set(BUILT_TYPES))
    if unknown:
        raise DataError(f"question type(s) {', '.join(unknown)} cannot be built from folders; "
                        f"choose from: {', '.join(BUILT_TYPES)}")
    folders = [discover(p) for p in discover_categories(root)]
    categories = [f.category for f in folders]
    dataset = Path(root).resolve().name
    records: list[MCQRecord] = []
    summary = QuestionBuildSummary(str(out), split, 0)
    for index, folder in enumerate(folders):
        samples = partition(folder.test, train_per_type, dev_fraction, protocol_seed)[split]
        rng = np.random.default_rng([seed, index, 104651])
        found, skipped = category_questions(folder, samples, rng, dataset, categories, types, reference, balance,
                                            max_options)
        records += found
        summary.skipped_localization += skipped
        summary.images += len(samples)
        summary.per_category[folder.category] = {t: sum(r.type == t and r.category == folder.category for r in found)
                                                 for t in types}
    if not records:
        raise DataError(f"{root}: no questions of the types {', '.join(types)} on the {split} split")
    write_questions(records, out)
    summary.n_questions = len(records)
    return records, summary
