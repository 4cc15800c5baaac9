"""MMAD averaging beyond tests/metrics/test_grounding.py: type aliases, the exact random floor, and
unparsable answers counted wrong (MMAD's script drops them)."""

from __future__ import annotations

import pytest

from rlad.errors import DataError
from rlad.metrics.choice import choice_accuracy, mmad_average, random_choice_floor, task_name


def test_mmad_names_and_the_papers_name_are_one_balanced_task():
    assert task_name("Anomaly Discrimination") == "Anomaly Detection" == task_name("Anomaly Detection")
    # 3 normal (all right), 1 defective (wrong): balanced (1 + 0) / 2, not 3/4.
    r = choice_accuracy(["A", "A", "A", "A"], ["A", "A", "A", "B"], ["Anomaly Detection"] * 4,
                        normal=[True, True, True, False])
    assert r["accuracy"] == 0.5 and set(r["per_task"]) == {"Anomaly Detection"}


def test_unparsable_answers_count_wrong():
    r = choice_accuracy([None, "", "AB", "b"], ["A", "A", "A", "B"])
    assert r["accuracy"] == pytest.approx(1 / 4) and r["n_correct"] == 1  # "b" means B


def test_random_floor_is_exact_and_averaged_like_accuracy():
    floor = random_choice_floor([2, 2, 4, 3], ["Anomaly Detection", "Anomaly Detection", "Defect Classification",
                                               "Defect Classification"], ["d1", "d1", "d1", "d2"],
                                normal=[True, False, False, False])
    # d1: detection 0.5, classification 1/4 -> 0.375; d2: classification 1/3.
    assert floor["per_dataset"]["d1"]["accuracy"] == pytest.approx(0.375)
    assert floor["accuracy"] == pytest.approx((0.375 + 1 / 3) / 2)
    assert floor["per_task"]["Defect Classification"] == pytest.approx((0.25 + 1 / 3) / 2)
    with pytest.raises(DataError):
        random_choice_floor([0])


def test_mmad_average_checks_its_input():
    with pytest.raises(DataError, match="lengths differ"):
        mmad_average([1.0], tasks=["a", "b"])
    with pytest.raises(DataError, match="no questions"):
        mmad_average([])
