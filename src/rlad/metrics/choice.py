"""MMAD-style multiple-choice accuracy.

The MMAD protocol averages accuracy over subtasks within each source dataset, then over datasets.
Anomaly discrimination ("is there a defect?") is scored *balanced*: the mean of the accuracy on
normal and on defective images, so answering "defective" everywhere does not score 0.5+ on a
defect-heavy set. Which images are normal cannot be read from the letters (the Yes/No letter order
varies per question), so balanced scoring needs the `normal` flags; asking for it without them is
an error rather than a silently unbalanced number.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from rlad.errors import DataError

DISCRIMINATION_TASK = "Anomaly Discrimination"


def _letter(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("().").strip().upper()
    return text if len(text) == 1 and text.isalpha() else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def choice_accuracy(pred_letters: Sequence, gt_letters: Sequence, tasks: Sequence[str] | None = None,
                    datasets: Sequence[str] | None = None, normal: Sequence[bool] | None = None,
                    discrimination_task: str = DISCRIMINATION_TASK) -> dict:
    """Accuracy averaged over tasks, then over datasets.

    pred_letters: the model's letters (None or anything unparsable counts as wrong).
    gt_letters: the correct letters ("B", "b", "(B)" and "B." all mean B).
    tasks / datasets: per-question labels; missing means one task / one dataset.
    normal: per-question flag, needed when `discrimination_task` appears in `tasks`; that task's
    accuracy is then the mean of its accuracy on normal and on defective images.
    Returns {"accuracy", "per_dataset": {ds: {"accuracy", "tasks": {task: acc}}}, "per_task":
    {task: mean over the datasets that have it}, "n", "n_correct"}.
    """
    n = len(gt_letters)
    lengths = {"pred_letters": len(pred_letters), "tasks": len(tasks) if tasks is not None else n,
               "datasets": len(datasets) if datasets is not None else n,
               "normal": len(normal) if normal is not None else n}
    if any(length != n for length in lengths.values()):
        raise DataError(f"choice accuracy: lengths differ (gt_letters {n}, {lengths})")
    if n == 0:
        raise DataError("choice accuracy: no questions to evaluate")
    tasks = list(tasks) if tasks is not None else ["all"] * n
    datasets = list(datasets) if datasets is not None else ["all"] * n
    if discrimination_task in tasks and normal is None:
        raise DataError(f"choice accuracy: the {discrimination_task!r} task is scored balanced and needs "
                        "the per-question `normal` flags")

    correct = []
    for i, (pred, gt) in enumerate(zip(pred_letters, gt_letters)):
        gt_letter = _letter(gt)
        if gt_letter is None:
            raise DataError(f"choice accuracy: ground truth #{i} is {gt!r}, not a single letter")
        correct.append(_letter(pred) == gt_letter)

    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(datasets, tasks)):
        groups[key].append(i)

    per_dataset: dict[str, dict] = {}
    for (dataset, task), idx in groups.items():
        if task == discrimination_task:
            by_kind = [[correct[i] for i in idx if bool(normal[i]) is kind] for kind in (True, False)]
            acc = _mean([_mean(part) for part in by_kind if part])
        else:
            acc = _mean([correct[i] for i in idx])
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
        "n_correct": sum(correct),
    }
