"""rlad.metrics.pixel against scikit-learn, a from-the-definition AUPRO and hand-computed cases."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from rlad.errors import ConfigError, DataError, RladError
from rlad.metrics import pixel


def _load_reference_metrics():
    # benchmarks/ is not an installed package; load the one shared copy by path.
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reference_metrics.py"
    spec = importlib.util.spec_from_file_location("rlad_bench_reference_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_reference_metrics()


# ------------------------------------------------------------------------------------------
# AUPRO straight from the definition: every distinct score as a threshold, per-region overlaps


def definition_pro_points(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = masks != 0
    regions = []
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(index, labelled == k) for k in range(1, count + 1)]
    normal_scores = maps[~masks]
    fprs, pros = [0.0], [0.0]  # threshold above every score
    for threshold in np.unique(maps)[::-1]:
        fprs.append(np.count_nonzero(normal_scores >= threshold) / normal_scores.size)
        overlaps = [np.count_nonzero(maps[i][region] >= threshold) / region.sum() for i, region in regions]
        pros.append(float(np.mean(overlaps)))
    fprs.append(1.0)
    pros.append(1.0)
    return np.array(fprs), np.array(pros)


def definition_aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float) -> float:
    fprs, pros = definition_pro_points(maps, masks)
    area = 0.0
    for x0, x1, y0, y1 in zip(fprs[:-1], fprs[1:], pros[:-1], pros[1:]):
        if x0 >= max_fpr:
            break
        if x1 <= max_fpr:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_limit = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            area += (max_fpr - x0) * (y0 + y_limit) / 2
            break
    return area / max_fpr


def random_case(seed: int, n_images: int = 6, size: int = 14, levels: int | None = 6, dtype=np.float32):
    """Blob masks (some images normal) and maps with plateaus and ties when `levels` is set."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((n_images, size, size)), (0, 1.5, 1.5))
    masks = noise > np.quantile(noise, 0.8)
    masks[rng.random(n_images) < 0.3] = False
    maps = rng.random((n_images, size, size)) + 0.6 * masks * rng.random()
    if levels:
        maps = np.round(maps * levels) / levels
    return maps.astype(dtype), masks


# ------------------------------------------------------------------------------------------
# AUROC, AP, F1 max against scikit-learn


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_score_metrics_match_sklearn_with_ties(seed, dtype):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    labels = (rng.random(n) < rng.uniform(0.05, 0.9)).astype(int)
    labels[:2] = [0, 1]
    scores = (rng.integers(0, 12, n) + labels * rng.integers(0, 4, n)).astype(dtype) / 7
    assert pixel.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert pixel.average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    best, threshold = pixel.f1_max(scores, labels)
    assert best == pytest.approx(reference.sklearn_f1_max(scores, labels), abs=1e-12)
    assert f1_score(labels, scores >= threshold) == pytest.approx(best, abs=1e-12)


def test_continuous_scores_match_sklearn():
    rng = np.random.default_rng(11)
    labels = rng.random(5000) < 0.1
    scores = rng.normal(size=5000) + labels
    assert pixel.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert pixel.average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


def test_hand_computed_vectors():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert pixel.auroc(scores, labels) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert pixel.average_precision(scores, labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert pixel.f1_max(scores, labels) == pytest.approx((0.8, 0.35))  # TP 2, FP 1, FN 0
    assert pixel.auroc([1, 2, 2, 3], [0, 0, 1, 1]) == pytest.approx(3.5 / 4)  # a tie counts half


def test_constant_scores():
    labels = [0, 1, 0, 1, 1]
    assert pixel.auroc([0.5] * 5, labels) == 0.5
    assert pixel.average_precision([0.5] * 5, labels) == pytest.approx(3 / 5)
    assert pixel.f1_max([0.5] * 5, labels) == pytest.approx((2 * 3 / (2 * 3 + 2), 0.5))


def test_single_class_is_nan_with_warning():
    with pytest.warns(pixel.UndefinedMetricWarning, match="no negative"):
        assert np.isnan(pixel.auroc([0.1, 0.2], [1, 1]))
    with pytest.warns(pixel.UndefinedMetricWarning, match="no positive"):
        assert np.isnan(pixel.average_precision([0.1, 0.2], [0, 0]))
    with pytest.warns(pixel.UndefinedMetricWarning):
        assert np.isnan(pixel.f1_max([0.1, 0.2], [0, 0])[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pixel.f1_max([0.1, 0.2], [1, 1]) == (1.0, 0.1)  # no negatives: F1 is still defined


# ------------------------------------------------------------------------------------------
# PRO curve and AUPRO


def test_hand_computed_aupro_with_a_tie_across_classes():
    # Region A = one pixel (score 0.9); region B = two pixels (0.8, 0.2); normal pixels 0.8, 0.3, 0.1.
    maps = np.array([[[0.9, 0.8, 0.3, 0.1, 0.8, 0.2]]])
    masks = np.array([[[1, 0, 0, 0, 1, 1]]])
    # Vertices: (0,0) (0,.5) then the 0.8 tie moves diagonally to (1/3,.75); (2/3,.75) (2/3,1) (1,1).
    fpr, pro = pixel.pro_curve(maps, masks)
    assert np.allclose(fpr, [0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    assert np.allclose(pro, [0, 0.5, 0.75, 0.75, 1, 1])
    at_limit = 0.5 + 0.25 * 0.3 / (1 / 3)
    assert pixel.aupro(maps, masks, max_fpr=0.3) == pytest.approx(0.3 * (0.5 + at_limit) / 2 / 0.3)
    assert pixel.aupro(maps, masks, max_fpr=1.0) == pytest.approx((0.5 + 0.75) / 6 + 0.75 / 3 + 1 / 3)


def test_regions_use_8_connectivity():
    # Diagonal neighbours form one 3-pixel region (4-connectivity would give regions of 1 and 2).
    maps = np.array([[[0.9, 0.1, 0.2], [0.1, 0.1, 0.1], [0.3, 0.2, 0.1]]])
    masks = np.zeros((1, 3, 3), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    fpr, pro = pixel.pro_curve(maps, masks)
    assert pro[1] == pytest.approx(1 / 3) and fpr[1] == 0.0  # 4-connectivity: PRO 0.5 here


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_aupro_matches_the_definition(seed, max_fpr):
    maps, masks = random_case(seed, levels=[4, 9, None][seed % 3])
    if not masks.any():
        masks[0, 2:5, 2:5] = True
    expected = definition_aupro(maps.astype(np.float64), masks, max_fpr)
    assert pixel.aupro(maps, masks, max_fpr=max_fpr) == pytest.approx(expected, abs=1e-9)
    assert reference.reference_aupro(maps, masks, max_fpr) == pytest.approx(expected, abs=1e-6)


def test_pro_curve_vertices_lie_on_the_definition_polyline():
    maps, masks = random_case(3, levels=5)
    fpr, pro = pixel.pro_curve(maps, masks)
    assert fpr[0] == pro[0] == 0 and fpr[-1] == pro[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    ref_fpr, ref_pro = definition_pro_points(maps, masks)
    # Every definition point is a vertex of ours (ours only drops collinear horizontal points).
    ours = set(zip(np.round(fpr, 12), np.round(pro, 12)))
    theirs = set(zip(np.round(ref_fpr, 12), np.round(ref_pro, 12)))
    assert ours <= theirs


def test_float32_and_float64_maps_give_the_same_aupro():
    maps, masks = random_case(5, levels=8)  # multiples of 1/8 are exact in both
    maps[0, 0, :3] = [-0.0, 0.0, -0.125]  # -0.0 and 0.0 must tie
    value32 = pixel.aupro(maps.astype(np.float32), masks)
    value64 = pixel.aupro(maps.astype(np.float64), masks)
    assert value32 == pytest.approx(value64, abs=1e-12)


def test_integer_maps_equal_their_float_values():
    maps, masks = random_case(8, levels=None)
    quantised = (maps * 200).astype(np.uint8)  # many ties
    labels, scores = masks.any(axis=(1, 2)), quantised.max(axis=(1, 2))
    as_int = pixel.evaluate(scores, labels, quantised, masks)
    as_float = pixel.evaluate(scores.astype(float), labels, quantised.astype(np.float64), masks)
    assert as_int == as_float
    assert as_int["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), quantised.ravel()), abs=1e-12)


def test_packed_float32_sort_equals_argsort():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(size=500), [0.0, -0.0, np.finfo(np.float32).tiny, -1e30, 1e30, 1e-45, 3.5, 3.5]]
    ).astype(np.float32)
    ids = rng.integers(0, 1000, values.size)
    sorted_values, sorted_ids = pixel._sort_float32_with_ids(values, ids)
    assert np.array_equal(sorted_values, np.sort(values))
    assert sorted(zip(sorted_values.tolist(), sorted_ids.tolist())) == sorted(
        zip((values + np.float32(0)).tolist(), ids.tolist())
    )


def test_chunked_sort_gives_the_same_ranks(monkeypatch):
    maps, masks = random_case(7, n_images=9, levels=6)
    single = pixel.evaluate(maps.max(axis=(1, 2)), masks.any(axis=(1, 2)), maps, masks)
    monkeypatch.setattr(pixel, "_thread_count", lambda n_values: 4)
    chunked = pixel.evaluate(maps.max(axis=(1, 2)), masks.any(axis=(1, 2)), maps, masks)
    assert single == chunked


# ------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_matches_the_reference_implementations():
    maps, masks = random_case(1, n_images=10, size=20, levels=10)
    labels = masks.any(axis=(1, 2))
    scores = np.round(maps.max(axis=(1, 2)) * 4) / 4
    result = pixel.evaluate(scores, labels, maps, masks)
    expected = reference.reference_evaluate(scores, labels, maps, masks)
    assert result["undefined"] == {}
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-9), name
    pixel_labels, pixel_scores = masks.ravel(), maps.ravel()
    assert f1_score(pixel_labels, pixel_scores >= result["pixel_f1_threshold"]) == pytest.approx(
        result["pixel_f1_max"]
    )
    assert f1_score(labels, scores >= result["image_f1_threshold"]) == pytest.approx(result["image_f1_max"])


def test_mask_encodings_and_list_input_agree():
    maps, masks = random_case(2)
    labels = masks.any(axis=(1, 2))
    scores = maps.mean(axis=(1, 2))
    as_bool = pixel.evaluate(scores, labels, maps, masks)
    as_255 = pixel.evaluate(scores, labels, maps, masks.astype(np.uint8) * 255)
    as_01 = pixel.evaluate(scores, labels.astype(int), list(maps), list(masks.astype(np.int64)))
    assert as_bool == as_255 == as_01


def test_maps_of_different_sizes_pool_all_pixels():
    rng = np.random.default_rng(4)
    maps = [rng.random((8, 12)), rng.random((5, 7)), rng.random((10, 3))]
    masks = [np.zeros((8, 12), bool), rng.random((5, 7)) > 0.6, rng.random((10, 3)) > 0.7]
    result = pixel.evaluate([0.1, 0.9, 0.5], [0, 1, 1], maps, masks)
    flat_scores = np.concatenate([m.ravel() for m in maps])
    flat_labels = np.concatenate([m.ravel() for m in masks])
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(flat_labels, flat_scores), abs=1e-12)


def test_evaluate_without_defective_images_marks_metrics_undefined():
    maps, _ = random_case(0)
    masks = np.zeros(maps.shape, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # evaluate reports through `undefined`, it does not warn
        result = pixel.evaluate(maps.max(axis=(1, 2)), [0] * len(maps), maps, masks)
    names = ["image_auroc", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"]
    assert sorted(result["undefined"]) == sorted(names)
    assert all(np.isnan(result[name]) for name in names)
    assert "no defective images" in result["undefined"]["image_auroc"]
    assert "no defect pixels" in result["undefined"]["aupro"]


def test_evaluate_without_normal_images_or_pixels():
    maps, masks = random_case(3)
    result = pixel.evaluate(maps.max(axis=(1, 2)), [1] * len(maps), maps, masks)
    assert np.isnan(result["image_auroc"]) and "no normal images" in result["undefined"]["image_auroc"]
    assert result["image_f1_max"] == 1.0  # every image defective: flagging all of them is perfect
    assert not np.isnan(result["pixel_auroc"])
    all_defect = pixel.evaluate([0.5, 0.7], [1, 1], maps[:2], np.ones(maps[:2].shape, bool))
    assert set(all_defect["undefined"]) == {"image_auroc", "pixel_auroc", "aupro"}
    assert all_defect["pixel_ap"] == 1.0 and all_defect["pixel_f1_max"] == 1.0


def test_constant_maps():
    masks = random_case(6)[1]
    masks[0, :3, :3] = True
    maps = np.full(masks.shape, 0.25, dtype=np.float32)
    result = pixel.evaluate(np.zeros(len(maps)), masks.any(axis=(1, 2)), maps, masks)
    n_pos, n_all = masks.sum(), masks.size
    assert result["pixel_auroc"] == 0.5 and result["image_auroc"] == 0.5
    assert result["pixel_f1_max"] == pytest.approx(2 * n_pos / (n_pos + n_all))
    assert result["pixel_f1_threshold"] == 0.25
    assert result["aupro"] == pytest.approx(0.15)  # the diagonal from (0,0) to (1,1), up to 0.3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_map_names_the_image(bad):
    maps, masks = random_case(0)
    maps[2, 3, 4] = bad
    with pytest.raises(DataError, match=r"anomaly_maps\[2\]"):
        pixel.evaluate(np.zeros(len(maps)), masks.any(axis=(1, 2)), maps, masks)
    with pytest.raises(DataError, match=r"anomaly_maps\[2\]"):
        pixel.aupro(maps, masks)


def test_non_finite_score_names_the_image():
    maps, masks = random_case(0)
    scores = np.zeros(len(maps))
    scores[1] = np.nan
    with pytest.raises(DataError, match=r"image_scores\[1\]"):
        pixel.evaluate(scores, masks.any(axis=(1, 2)), maps, masks)
    with pytest.raises(RladError, match=r"scores\[0\]"):
        pixel.auroc([np.inf, 1.0], [0, 1])


def test_shape_mismatches_name_the_shapes():
    maps, masks = random_case(0, n_images=3, size=8)
    labels, scores = [0, 1, 1], [0.1, 0.2, 0.3]
    with pytest.raises(DataError, match=r"\(8, 8\).*\(8, 9\)"):
        pixel.evaluate(scores, labels, maps, [masks[0], masks[1], np.zeros((8, 9))])
    with pytest.raises(DataError, match="3 maps but masks has 2"):
        pixel.evaluate(scores, labels, maps, masks[:2])
    with pytest.raises(DataError, match="4 entries but anomaly_maps has 3"):
        pixel.evaluate(scores + [0.4], labels + [0], maps, masks)
    with pytest.raises(DataError, match="image_scores has 3 entries but image_labels has 2"):
        pixel.evaluate(scores, labels[:2], maps, masks)
    with pytest.raises(DataError, match=r"\(N, H, W\).*\(8, 8\)"):
        pixel.evaluate(scores[:1], labels[:1], maps[0], masks[0])


def test_bad_labels_masks_and_options():
    maps, masks = random_case(0, n_images=3, size=8)
    with pytest.raises(DataError, match=r"image_labels\[2\] is 2"):
        pixel.evaluate([0.1, 0.2, 0.3], [0, 1, 2], maps, masks)
    soft = masks.astype(np.uint8) * 255
    soft[1, 0, 0] = 128
    with pytest.raises(DataError, match=r"masks\[1\] has the value 128"):
        pixel.evaluate([0.1, 0.2, 0.3], [0, 1, 1], maps, soft)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="max_fpr"):
            pixel.evaluate([0.1, 0.2, 0.3], [0, 1, 1], maps, masks, max_fpr=bad)
    with pytest.raises(DataError, match="no defect pixels"):
        pixel.pro_curve(maps, np.zeros(maps.shape, bool))
    with pytest.warns(pixel.UndefinedMetricWarning):
        assert np.isnan(pixel.aupro(maps, np.zeros(maps.shape, bool)))


def test_inputs_are_left_untouched():
    maps, masks = random_case(9, n_images=1)
    masks[0, :2, :2] = True
    maps_before, masks_before = maps.copy(), masks.copy()
    pixel.evaluate([0.3], [1], maps, masks)
    assert np.array_equal(maps, maps_before) and np.array_equal(masks, masks_before)
