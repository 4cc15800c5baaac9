"""MMAD-style multiple-choice accuracy.

The MMAD protocol averages accuracy over subtasks within each source dataset, then over datasets.
Anomaly discrimination ("is there a defect?", named "Anomaly Detection" in MMAD's files) is scored
*balanced*: the mean of the accuracy on normal and on defective images, so answering "defective"
everywhere does not score 0.5+ on a defect-heavy set. Which images are normal cannot be read from the
letters (the Yes/No letter order varies per question), so balanced scoring needs the `normal` flags;
asking for it without them is an error rather than a silently unbalanced number.

MMAD scores "Object Structure" and "Object Details" questions together as "Object Analysis"
(`TASK_ALIASES`); rlad does the same. Unlike MMAD's script, which drops answers it cannot parse
before averaging, an unparsable answer here counts as wrong (callers report the parse-failure rate
next to the accuracy).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from rlad.errors import DataError

DISCRIMINATION_TASK = "Anomaly Detection"
TASK_ALIASES = {
    "Anomaly Discrimination": DISCRIMINATION_TASK,  # the papers' name for MMAD's "Anomaly Detection"
    "Object Structure": "Object Analysis",
    "Object Details": "Object Analysis",
}


def _letter(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("().").strip().upper()
    return text if len(text) == 1 and text.isalpha() else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def task_name(task: str) -> str:
    """The name a question type is scored under (MMAD merges some types)."""
    return TASK_ALIASES.get(task, task)


def mmad_average(scores: Sequence[float], tasks: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
                 normal: Sequence[bool] | None = None, discrimination_task: str = DISCRIMINATION_TASK) -> dict:
    """Per-question scores in [0, 1] (1 = right) averaged the MMAD way: over questions within each
    (dataset, task), the discrimination task balanced over normal and defective images; then over tasks
    within a dataset; then over datasets.

    tasks / datasets: per-question labels; missing means one task / one dataset. Task names go through
    `TASK_ALIASES` first. normal: per-question flag, needed when the discrimination task appears.
    Returns {"accuracy", "per_dataset": {ds: {"accuracy", "tasks": {task: acc}}}, "per_task": {task:
    mean over the datasets that have it}, "n"}.
    """
    n = len(scores)
    lengths = {"tasks": len(tasks) if tasks is not None else n, "datasets": len(datasets) if datasets is not None else n,
               "normal": len(normal) if normal is not None else n}
    if any(length != n for length in lengths.values()):
        raise DataError(f"choice accuracy: lengths differ ({n} answers, {lengths})")
    if n == 0:
        raise DataError("choice accuracy: no questions to evaluate")
    discrimination_task = task_name(discrimination_task)
    tasks = [task_name(t) for t in tasks] if tasks is not None else ["all"] * n
    datasets = list(datasets) if datasets is not None else ["all"] * n
    if discrimination_task in tasks and normal is None:
        raise DataError(f"choice accuracy: the {discrimination_task!r} task is scored balanced and needs "
                        "the per-question `normal` flags")

    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(datasets, tasks)):
        groups[key].append(i)

    per_dataset: dict[str, dict] = {}
    for (dataset, task), idx in groups.items():
        if task == discrimination_task:
            by_kind = [[scores[i] for i in idx if bool(normal[i]) is kind] for kind in (True, False)]
            acc = _mean([_mean(part) for part in by_kind if part])
        else:
            acc = _mean([scores[i] for i in idx])
        per_dataset.setdefault(dataset, {"tasks": {}})["tasks"][task] = acc
    for entry in per_dataset.values():
        entry["accuracy"] = _mean(list(entry["tasks"].values()))

    per_task_values: dict[str, list[float]] = defaultdict(list)
    for entry in per_dataset.values():
        for task, acc in entry["tasks"].items():
            per_task_values[task].append(acc)
    return {
        "accuracy": _mean([entry["accuracy"] for entry in per_dataset.values()]),
        "per_dataset": per_dataset,
        "per_task": {task: _mean(values) for task, values in per_task_values.items()},
        "n": n,
    }


def choice_accuracy(pred_letters: Sequence, gt_letters: Sequence, tasks: Sequence[str] | None = None,
                    datasets: Sequence[str] | None = None, normal: Sequence[bool] | None = None,
                    discrimination_task: str = DISCRIMINATION_TASK) -> dict:
    """Accuracy averaged over tasks, then over datasets (`mmad_average`).

    pred_letters: the model's letters (None or anything unparsable counts as wrong).
    gt_letters: the correct letters ("B", "b", "(B)" and "B." all mean B).
    Returns `mmad_average`'s dict plus "n_correct".
    """
    if len(pred_letters) != len(gt_letters):
        raise DataError(f"choice accuracy: lengths differ (gt_letters {len(gt_letters)}, "
                        f"pred_letters {len(pred_letters)})")
    correct = []
    for i, (pred, gt) in enumerate(zip(pred_letters, gt_letters)):
        gt_letter = _letter(gt)
        if gt_letter is None:
            raise DataError(f"choice accuracy: ground truth #{i} is {gt!r}, not a single letter")
        correct.append(float(_letter(pred) == gt_letter))
    result = mmad_average(correct, tasks, datasets, normal, discrimination_task)
    result["n_correct"] = int(sum(correct))
    return result


def random_choice_floor(n_options: Sequence[int], tasks: Sequence[str] | None = None,
                        datasets: Sequence[str] | None = None, normal: Sequence[bool] | None = None) -> dict:
    """The expected accuracy of a uniformly random letter, averaged the same way (exact, not sampled)."""
    if any(int(k) < 1 for k in n_options):
        raise DataError("random choice floor: every question needs at least one option")
    return mmad_average([1.0 / int(k) for k in n_options], tasks, datasets, normal)
