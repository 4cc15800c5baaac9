"""Multiple-choice inspection questions, the library behind `rlad test-questions`: answering a question
file with a policy run (a VLM trained with `rlad grpo --task mcq`) or with fitted pixel runs (the
training-free answerer), and scoring the answers the MMAD way.

Scores (`score_answers`): accuracy averaged over question types within each source dataset, then over
datasets (MMAD), anomaly detection balanced over normal and defective images; accuracy per type and
per category; the answer-parse failure rate; the abstention rate (the training-free answerer abstains
on questions its map cannot answer; an abstention counts as wrong); and the random-choice floor on the
same questions (the expected accuracy of a uniformly random letter).

The training-free answerer (`PixelAnswerer`), one fitted pixel run per category:
  - Anomaly Detection: "Yes" iff the image score reaches the run's image threshold (fitted on its
    validation split, never on evaluation images);
  - Defect Localization: the option region (`data.questions.regions`) with the most map mass, the
    map normalised by the run's validation threshold (0.5 = threshold, clipped to [0, 1]);
  - Defect Classification: the nearest class prototype, when labelled defect images of at least two
    of the option types exist (the run's own labelled images, and the defective images of a
    `prototypes` question file, e.g. the training questions): each image is described by the shape and
    contrast of its predicted anomaly region (`region_descriptor`), prototypes are the mean descriptors
    per type, distances are taken after standardising by the prototypes' spread;
  - anything else (object classification, MMAD's description/analysis types, options it cannot
    read): abstains.
Questions about a pixel run's own labelled or development images are left out (by content hash),
as `rlad test` leaves them out; a prototype file that shares an image with the evaluated questions is
refused.

A policy run answers greedily from `MCQTask` prompts, 1-shot (the first template image, MMAD's
standard protocol) and/or 0-shot. A policy is refused on questions about images it was trained on
(its run records the question file; images are compared by content) unless `allow_overlap`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rlad.data.questions.records import DEFECT_CLASSIFICATION, DEFECT_LOCALIZATION, MCQRecord
from rlad.errors import ConfigError, DataError
from rlad.metrics.choice import DISCRIMINATION_TASK, choice_accuracy, random_choice_floor, task_name

# ----------------------------------------------------------------------------------------- scoring
@dataclass
class Answers:
    """One answerer's letters for a list of questions (None = no answer), and which it abstained on."""

    letters: list
    abstained: list = field(default_factory=list)
    texts: list = field(default_factory=list)

    def __post_init__(self):
        self.abstained = self.abstained or [False] * len(self.letters)


def score_answers(records: Sequence[MCQRecord], answers: Answers) -> dict:
    """MMAD-averaged accuracy and its breakdowns (see the module docstring)."""
    tasks = [r.type for r in records]
    datasets = [r.dataset for r in records]
    normal = [r.normal for r in records]
    truth = [r.answer for r in records]
    result = choice_accuracy(answers.letters, truth, tasks, datasets, normal)
    by_category = choice_accuracy(answers.letters, truth, tasks, [r.category for r in records], normal)
    floor = random_choice_floor([len(r.options) for r in records], tasks, datasets, normal)
    n = len(records)
    abstained = sum(answers.abstained)
    parse_failures = sum(letter is None and not skip for letter, skip in zip(answers.letters, answers.abstained))
    per_type = {}
    for kind in dict.fromkeys(task_name(t) for t in tasks):
        idx = [i for i, t in enumerate(tasks) if task_name(t) == kind]
        answered = [i for i in idx if not answers.abstained[i]]
        per_type[kind] = {
            "accuracy": result["per_task"][kind], "random_floor": floor["per_task"][kind], "n": len(idx),
            "answered": len(answered),
            "accuracy_answered": (sum(answers.letters[i] == truth[i] for i in answered) / len(answered)
                                  if answered else None),
        }
    discrimination = [i for i, t in enumerate(tasks) if task_name(t) == DISCRIMINATION_TASK]
    detection = {}
    for name, kind in (("normal", True), ("defective", False)):
        idx = [i for i in discrimination if normal[i] is kind]
        detection[f"accuracy_{name}"] = sum(answers.letters[i] == truth[i] for i in idx) / len(idx) if idx else None
        detection[f"n_{name}"] = len(idx)
    return {
        "accuracy": result["accuracy"],
        "random_floor": floor["accuracy"],
        "per_type": per_type,
        "per_dataset": {ds: entry["accuracy"] for ds, entry in result["per_dataset"].items()},
        "per_category": {c: entry["accuracy"] for c, entry in by_category["per_dataset"].items()},
        "anomaly_detection": detection,
        "parse_failure_rate": parse_failures / n,
        "abstain_rate": abstained / n,
        "n": n,
        "n_correct": result["n_correct"],
    }


# -------------------------------------------------------------------------------- policy answers
def policy_answers(policy, records: Sequence[MCQRecord], shots: int = 1, batch_size: int = 16,
                   threads: int = 1) -> Answers:
    """Greedy answers of a policy to `MCQTask(shots)` prompts; a letter outside the options is no answer."""
    from rlad.engine import torch_threads
    from rlad.tasks.mcq import MCQTask

    task = MCQTask(shots=shots)
    prompts = [task.prompt(r) for r in records]
    with torch_threads(threads):
        policy.prepare(prompts)
        completions = policy.predict(prompts, batch_size=batch_size)
    return Answers([task.answer(c.text, r) for c, r in zip(completions, records)], texts=[c.text for c in completions])


def trained_on(run_path: str | Path) -> list[Path]:
    """The question files a policy run learnt from that still exist: its own (GRPO, or a warm start on
    questions) and those of the run it started from (--init), and so on; none for runs on pairs."""
    from rlad.engine import RunDir

    files, seen, run = [], set(), Path(run_path)
    while run is not None and run.resolve() not in seen and RunDir(run).config_path.is_file():
        seen.add(run.resolve())
        config = RunDir(run).load_config()
        path = config.get("pairs")
        if config.get("task") == "mcq" and path and Path(path).is_file():
            files.append(Path(path))
        run = Path(config["init"]) if config.get("init") else None
    return files


def overlapping_images(records: Sequence[MCQRecord], training: Sequence[MCQRecord]) -> list[str]:
    """The evaluated images that a training question also asked about (compared by content)."""
    from rlad.data.paths import content_sha256

    seen = {content_sha256(p) for p in {r.image for r in training} if Path(p).is_file()}
    return sorted(p for p in {r.image for r in records} if content_sha256(p) in seen)


# ---------------------------------------------------------------------------- training-free answerer
def region_descriptor(image: np.ndarray, normalised_map: np.ndarray) -> np.ndarray:
    """Shape and contrast of an image's predicted anomaly region (the map at or above its threshold,
    else its top 1% pixels): log area share, elongation, position (distance of the centre to the
    nearest border), box aspect, mean and peak of the map there, grey-level contrast and spread."""
    region = normalised_map >= 0.5
    if region.sum() < 2:
        region = normalised_map >= np.quantile(normalised_map, 0.99)
    h, w = region.shape
    rows, cols = np.nonzero(region)
    ys, xs = rows / h, cols / w
    spread = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])) + 1e-6 * np.eye(2))
    grey = image.mean(axis=0)
    inside, outside = grey[region], grey[~region]
    return np.array([
        np.log(region.mean()),
        0.5 * np.log(spread[1] / spread[0]),
        min(ys.mean(), 1 - ys.mean(), xs.mean(), 1 - xs.mean()),
        np.log((xs.max() - xs.min() + 1 / w) / (ys.max() - ys.min() + 1 / h)),
        normalised_map[region].mean(),
        normalised_map.max(),
        inside.mean() - (outside.mean() if outside.size else inside.mean()),
        inside.std(),
    ], dtype=np.float64)


def _yes_no(options: Sequence[str]) -> tuple[int, int] | None:
    """(index of Yes, index of No) when the options are exactly a yes and a no."""
    words = [o.strip().strip(".!").strip().lower() for o in options]
    if sorted(words) != ["no", "yes"]:
        return None
    return words.index("yes"), words.index("no")


def _type_key(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


class PixelAnswerer:
    """The training-free answerer of one category (see the module docstring)."""

    def __init__(self, run, labelled: Sequence[tuple[str, str]] = ()):
        self.run = run
        self.labelled = [*run.labelled_images(), *labelled]  # (image path, defect type)
        self.prototypes: dict[str, np.ndarray] = {}
        self.scale = None

    @property
    def name(self) -> str:
        return f"{self.run.loaded.cfg.method} ({self.run.path})"

    def _features(self, paths: Sequence[str], desc: str) -> dict[str, tuple]:
        """Per image: (raw score, map mass per region, descriptor)."""
        from rlad.data.questions.regions import region_mass

        out = {}
        for path, image, raw_map, score in self.run.predictions(paths, desc=desc):
            norm = self.run.post.normalise_maps(raw_map)
            out[path] = (float(score), region_mass(norm), region_descriptor(image, norm))
        return out

    def fit_prototypes(self) -> None:
        """Mean descriptor per defect type of the labelled images (none: classification abstains)."""
        labelled = list(dict.fromkeys(self.labelled))
        if not labelled:
            return
        features = self._features([p for p, _ in labelled], desc=f"{self.run.category}: prototypes")
        by_type: dict[str, list] = {}
        for path, kind in labelled:
            by_type.setdefault(_type_key(kind), []).append(features[path][2])
        every = np.stack([d for values in by_type.values() for d in values])
        self.scale = every.std(axis=0) + 1e-6
        self.prototypes = {kind: np.mean(values, axis=0) for kind, values in by_type.items()}

    def answer(self, records: Sequence[MCQRecord]) -> Answers:
        self.fit_prototypes()
        features = self._features(sorted({r.image for r in records}), desc=f"{self.run.category}: answering")
        letters, abstained = [], []
        for record in records:
            letter = self._answer_one(record, *features[record.image])
            letters.append(letter)
            abstained.append(letter is None)
        return Answers(letters, abstained)

    def _answer_one(self, record: MCQRecord, score: float, mass: dict, descriptor: np.ndarray) -> str | None:
        from rlad.data.questions.regions import parse_region

        kind = task_name(record.type)
        if kind == DISCRIMINATION_TASK:
            found = _yes_no(record.options)
            if found is None:
                return None
            anomalous = bool(self.run.post.is_anomalous(np.array([score]))[0])
            return record.letters[found[0] if anomalous else found[1]]
        if kind == DEFECT_LOCALIZATION:
            regions = [parse_region(o) for o in record.options]
            if any(r is None for r in regions):
                return None
            return record.letters[int(np.argmax([mass[r] for r in regions]))]
        if kind == DEFECT_CLASSIFICATION and self.prototypes:
            known = [(i, _type_key(o)) for i, o in enumerate(record.options) if _type_key(o) in self.prototypes]
            if len(known) < 2:
                return None
            distances = [np.linalg.norm((descriptor - self.prototypes[k]) / self.scale) for _, k in known]
            return record.letters[known[int(np.argmin(distances))][0]]
        return None


def pixel_answers(runs: dict, records: Sequence[MCQRecord], labelled: Sequence[MCQRecord] = ()) -> Answers:
    """Each category's questions answered by its run; every category needs one. The defective images of
    `labelled` (question records) add to the runs' own labelled images as defect-type prototypes."""
    missing = sorted({r.category for r in records} - set(runs))
    if missing:
        raise DataError(f"no pixel run for categor{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} "
                        f"(runs given: {', '.join(sorted(runs)) or 'none'}); pass one fitted run per category")
    letters: list = [None] * len(records)
    abstained = [True] * len(records)
    for category, run in runs.items():
        idx = [i for i, r in enumerate(records) if r.category == category]
        if not idx:
            continue
        extra = [(r.image, r.defect_type) for r in labelled if r.category == category and not r.normal]
        found = PixelAnswerer(run, extra).answer([records[i] for i in idx])
        for j, i in enumerate(idx):
            letters[i], abstained[i] = found.letters[j], found.abstained[j]
    return Answers(letters, abstained)


# ------------------------------------------------------------------------------------- the verb
def _is_pixel_run(path: Path) -> bool:
    """Pixel runs (`rlad fit METHOD`) have no training stage; policy runs (`rlad fit compact`, `rlad grpo`) do."""
    from rlad.engine import RunDir

    return "stage" not in RunDir(path).require_model().load_config()


def test_questions(run_paths: Sequence[str | Path], questions: str | Path, shots: Sequence[int] = (1,),
                   templates: str = "random", allow_overlap: bool = False, answers_out: str | Path | None = None,
                   batch_size: int = 16, prototypes: str | Path | None = None) -> dict:
    """Score one policy run, or one pixel run per category, on a question file (rlad JSONL or MMAD's
    `mmad.json`); see the module docstring. `prototypes`: a question file whose defective images are
    labelled examples for the training-free answerer. Saved in the run's metrics when there is one run."""
    from rlad.data.questions.records import load_question_file
    from rlad.engine import RunDir, status

    run_paths = [Path(p) for p in run_paths]
    if not run_paths:
        raise ConfigError("test-questions needs at least one RUN")
    records = load_question_file(questions, templates=templates)
    kinds = {_is_pixel_run(p) for p in run_paths}
    if kinds == {True, False}:
        raise ConfigError("give either one policy run or pixel runs (one per category), not both")
    report: dict = {"questions": str(Path(questions).resolve()), "runs": [str(p) for p in run_paths]}
    started = time.perf_counter()
    if kinds == {True}:
        from rlad.workflows.pixel_maps import excluded_by_protocol, runs_by_category

        runs = runs_by_category(run_paths)
        left_out = excluded_by_protocol([r.image for r in records], list(runs.values()))
        kept = [r for r in records if r.image not in left_out]
        if not kept:
            raise DataError(f"{questions}: every question is about a labelled or development image of the run(s)")
        status(f"{len(kept)} questions; left out {len(records) - len(kept)} about the runs' labelled/development images")
        labelled = load_question_file(prototypes, templates=templates) if prototypes else []
        shared = overlapping_images(kept, labelled)
        if shared:
            raise DataError(f"--prototypes {prototypes}: {len(shared)} of its images are also asked about in "
                            f"{questions}, e.g. {shared[0]}; take prototypes from another split (--split train)")
        answers = {"map": pixel_answers(runs, kept, labelled)}
        report.update(answerer="training-free (" + ", ".join(f"{c}: {r.loaded.cfg.method}" for c, r in runs.items()) + ")",
                      n_excluded_protocol=len(records) - len(kept))
    else:
        if len(run_paths) > 1:
            raise ConfigError("a policy run answers every question itself: give exactly one policy RUN")
        if prototypes:
            raise ConfigError("--prototypes is for pixel runs (the training-free answerer); a policy learns from its training")
        from rlad.workflows.grounding import load_policy

        if any(s not in (0, 1) for s in shots):
            raise ConfigError(f"--shots takes 0 and/or 1, got {list(shots)}")
        policy = load_policy(run_paths[0])
        if "mcq" not in policy.tasks:
            raise ConfigError(f"{run_paths[0]}: its {policy.name!r} policy cannot answer multiple-choice questions")
        for training in ([] if allow_overlap else trained_on(run_paths[0])):
            overlap = overlapping_images(records, load_question_file(training, check_files=False))
            if overlap:
                raise DataError(f"{len(overlap)} of the evaluated images were in the questions {run_paths[0]} was "
                                f"trained on ({training}), e.g. {overlap[0]}; build both files from one split "
                                f"(rlad data questions --split train / --split test), or pass --allow-overlap")
        kept = records
        answers = {f"{s}-shot": policy_answers(policy, kept, shots=s, batch_size=batch_size) for s in shots}
        report.update(answerer=f"policy {policy.name}", n_excluded_protocol=0)
    report["results"] = {setting: score_answers(kept, a) for setting, a in answers.items()}
    report["ms_per_question"] = round((time.perf_counter() - started) * 1000 / (len(kept) * len(answers)), 2)
    if answers_out:
        write_answers(kept, answers, answers_out)
        report["answers"] = str(answers_out)
    if len(run_paths) == 1:
        RunDir(run_paths[0]).save_metrics(report, key=f"questions:{Path(questions).name}")
    return report


def write_answers(records: Sequence[MCQRecord], answers: dict, path: str | Path) -> None:
    """One JSON line per question and setting: id, type, category, correct and given letter, text."""
    from rlad.data.jsonl import write_records

    rows = []
    for setting, given in answers.items():
        for i, record in enumerate(records):
            rows.append({"id": f"{record.id}@{setting}", "question": record.id, "setting": setting, "type": record.type,
                         "category": record.category, "answer": record.answer, "given": given.letters[i],
                         "abstained": given.abstained[i], "text": given.texts[i] if given.texts else ""})
    write_records(rows, path, "answer")
