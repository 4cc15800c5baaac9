"""Grounding metrics (rlad.metrics.grounding) and, at the end, MMAD-style choice accuracy
(rlad.metrics.choice). All expected values are computed by hand in the comments."""

import pytest

from rlad.boxes import ZERO_BOX
from rlad.errors import DataError
from rlad.metrics.choice import choice_accuracy
from rlad.metrics.grounding import box_exploit_stats, grounding_metrics, query_score

G = (100, 100, 200, 200)


def test_query_score_rules():
    assert query_score(ZERO_BOX, ZERO_BOX) == 1.0
    assert query_score((1, 1, 5, 5), ZERO_BOX) == 0.0
    assert query_score(None, ZERO_BOX) == 0.0
    assert query_score(None, G) == 0.0
    assert query_score(ZERO_BOX, G) == 0.0
    assert query_score((100, 100, 200, 150), G) == pytest.approx(0.5)


def test_grounding_metrics_hand_computed():
    preds = [
        (100, 100, 200, 150),  # defective, IoU 0.5 -> TP
        (100, 100, 200, 120),  # defective, IoU 0.2 -> FN (wrong size: FN only, not FP)
        None,                  # defective, invalid -> FN
        ZERO_BOX,              # defective, says normal -> FN
        ZERO_BOX,              # normal, correct
        (0, 0, 10, 10),        # normal, a box -> FP
        None,                  # normal, invalid -> wrong but not an FP
    ]
    gts = [G, G, G, G, ZERO_BOX, ZERO_BOX, ZERO_BOX]
    m = grounding_metrics(preds, gts)
    assert m["miou"] == pytest.approx((0.5 + 0.2 + 0 + 0 + 1 + 0 + 0) / 7)
    assert m["acc_at_0_3"] == pytest.approx(2 / 7)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 3)
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 4)
    assert m["f1"] == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert (m["n"], m["n_normal"], m["n_defective"], m["n_invalid"]) == (7, 3, 4, 2)
    assert m["miou_normal"] == pytest.approx(1 / 3)
    assert m["miou_defective"] == pytest.approx(0.7 / 4)


def test_threshold_is_inclusive_and_configurable():
    pred = [(100, 100, 200, 130)]  # IoU exactly 0.3
    assert grounding_metrics(pred, [G])["acc_at_0_3"] == 1.0
    assert grounding_metrics(pred, [G], iou_threshold=0.5)["acc_at_0_3"] == 0.0


def test_no_true_positive_gives_zero_f1_not_an_error():
    m = grounding_metrics([ZERO_BOX, ZERO_BOX], [G, ZERO_BOX])
    assert m["f1"] == 0.0 and m["precision"] == 0.0 and m["recall"] == 0.0
    assert m["miou"] == 0.5


def test_grounding_metrics_rejects_bad_input():
    with pytest.raises(DataError, match="length"):
        grounding_metrics([G], [G, G])
    with pytest.raises(DataError, match="no queries"):
        grounding_metrics([], [])
    with pytest.raises(DataError, match="zero box"):
        grounding_metrics([G], [None])


def test_box_exploit_stats_hand_computed():
    size = (1000, 1000)
    preds = [
        (0, 0, 1000, 1000),    # whole image: covers 100% (> 80%), overlaps the gt
        (300, 300, 400, 400),  # far box: no overlap
        (200, 100, 300, 200),  # touches the gt edge only: no overlap -> far
        (150, 150, 250, 250),  # overlaps
        None,                  # invalid: neither, but counts in the denominator
        (0, 0, 1000, 1000),    # normal query: ignored
    ]
    gts = [G, G, G, G, G, ZERO_BOX]
    s = box_exploit_stats(preds, gts, [size] * 6)
    assert s["n_defective"] == 5 and s["n_boxed"] == 4
    assert s["whole_image_rate"] == pytest.approx(1 / 5)
    assert s["far_box_rate"] == pytest.approx(2 / 5)
    assert s["mean_area_fraction"] == pytest.approx((1.0 + 0.01 + 0.01 + 0.01) / 4)


# ---------------------------------------------------------------------------- choice accuracy
def test_choice_accuracy_averages_tasks_then_datasets():
    preds = ["A", "B", "C", "A", "(B)", None]
    gts = ["A", "A", "c", "A", "B.", "D"]
    tasks = ["type", "type", "type", "where", "where", "type"]
    datasets = ["mvtec", "mvtec", "mvtec", "mvtec", "visa", "visa"]
    r = choice_accuracy(preds, gts, tasks, datasets)
    # mvtec: type 2/3, where 1/1 -> 5/6; visa: where 1/1, type 0/1 -> 1/2; overall (5/6 + 1/2) / 2
    assert r["per_dataset"]["mvtec"]["tasks"] == {"type": pytest.approx(2 / 3), "where": 1.0}
    assert r["per_dataset"]["mvtec"]["accuracy"] == pytest.approx(5 / 6)
    assert r["per_dataset"]["visa"]["accuracy"] == pytest.approx(1 / 2)
    assert r["accuracy"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert r["per_task"]["type"] == pytest.approx((2 / 3 + 0) / 2)
    assert r["n"] == 6 and r["n_correct"] == 4


def test_discrimination_is_balanced():
    # 1 normal image answered right, 3 defective images: 1 right. Plain accuracy would be 2/4;
    # balanced is (1/1 + 1/3) / 2.
    preds = ["B", "A", "B", "B"]
    gts = ["B", "A", "A", "A"]
    normal = [True, False, False, False]
    tasks = ["Anomaly Discrimination"] * 4
    r = choice_accuracy(preds, gts, tasks, normal=normal)
    assert r["accuracy"] == pytest.approx((1 + 1 / 3) / 2)
    with pytest.raises(DataError, match="normal"):
        choice_accuracy(preds, gts, tasks)


def test_choice_accuracy_rejects_bad_input():
    with pytest.raises(DataError, match="lengths"):
        choice_accuracy(["A"], ["A", "B"])
    with pytest.raises(DataError, match="single letter"):
        choice_accuracy(["A"], ["yes"])
