"""Poisson blending and cut-paste (rlad.data.synth.blend)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from rlad.data.synth.blend import paste_defect, seamless_blend
from rlad.errors import DataError


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _disk(shape, centre, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _interior_gradients_match(result, source, mask, offset, atol):
    """Forward differences between pairs of masked pixels equal the source's."""
    r0, c0 = offset
    h, w = mask.shape
    region = result[r0 : r0 + h, c0 : c0 + w]
    pairs_y = mask[1:, :] & mask[:-1, :]
    pairs_x = mask[:, 1:] & mask[:, :-1]
    dy_res, dy_src = np.diff(region, axis=0)[pairs_y], np.diff(source, axis=0)[pairs_y]
    dx_res, dx_src = np.diff(region, axis=1)[pairs_x], np.diff(source, axis=1)[pairs_x]
    np.testing.assert_allclose(dy_res, dy_src, atol=atol)
    np.testing.assert_allclose(dx_res, dx_src, atol=atol)


def test_seamless_blend_reproduces_source_gradients_and_leaves_outside_untouched():
    rng = _rng(0)
    target = rng.uniform(0.2, 0.6, size=(48, 56, 3))
    shape = (30, 30)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    # Source = the target underneath + a bump that vanishes well before the mask edge, + a constant
    # brightness offset: the exact Poisson solution is target + bump (the offset disappears).
    offset = (9, 14)
    under = target[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]]
    distance = np.hypot(rows - 15, cols - 15)
    bump = 0.25 * np.where(distance < 8, np.cos(distance / 8 * np.pi / 2) ** 4, 0.0)
    source = under + bump[:, :, None] + 0.1
    mask = _disk(shape, (15, 15), 12)

    result = seamless_blend(target, source, mask, offset)

    assert result.shape == target.shape and result.dtype == target.dtype
    outside = np.ones(target.shape[:2], bool)
    outside[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]] &= ~mask
    np.testing.assert_array_equal(result[outside], target[outside])
    _interior_gradients_match(result, source, mask, offset, atol=1e-8)
    inside = result[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]][mask]
    np.testing.assert_allclose(inside, (under + bump[:, :, None])[mask], atol=1e-8)


def test_seamless_blend_matches_boundary_not_source_brightness():
    target = np.full((40, 40, 3), 0.3)
    source = np.full((20, 20, 3), 0.9)
    mask = np.zeros((20, 20), bool)
    mask[3:17, 3:17] = True
    result = seamless_blend(target, source, mask, (10, 10))
    # A flat source has no gradient: the solution is the boundary value everywhere.
    np.testing.assert_allclose(result, target, atol=1e-10)


def test_seamless_blend_clips_and_accepts_grey_and_overhanging_source():
    target = np.full((20, 20), 0.95)
    rows = np.arange(12)[:, None] * np.ones((1, 12))
    source = rows * 0.2  # steep ramp: an unclipped solution would exceed 1
    mask = np.zeros((12, 12), bool)
    mask[2:10, 2:10] = True
    result = seamless_blend(target, source, mask, (-2, 10))  # source hangs over top and right edges
    assert result.shape == target.shape
    assert result.min() >= 0.0 and result.max() <= 1.0
    assert not np.array_equal(result, target)


def test_seamless_blend_whole_image_mask_keeps_gradients_and_target_mean():
    rng = _rng(1)
    target = rng.uniform(0, 1, size=(16, 16, 1))
    source = 0.3 + 0.02 * rng.standard_normal((16, 16, 1))
    result = seamless_blend(target, source, np.ones((16, 16), bool), (0, 0))
    np.testing.assert_allclose(result - source, (target - source).mean(), atol=1e-4)


def test_seamless_blend_rejects_mask_outside_target():
    with pytest.raises(ValueError):
        seamless_blend(np.zeros((10, 10, 3)), np.zeros((4, 4, 3)), np.ones((4, 4), bool), (8, 8))


def _defect_source():
    rng = _rng(5)
    image = rng.uniform(0, 1, size=(60, 60, 3))
    mask = np.zeros((60, 60), bool)
    mask[10:30, 15:31] = _disk((20, 16), (10, 8), 8)  # the big component
    mask[45:48, 45:48] = True  # a small one that must be ignored
    return image, mask


def test_paste_defect_uses_largest_component_and_keeps_outside_unchanged():
    image, mask = _defect_source()
    big_area = ndi.label(mask)[0]
    big_area = int((big_area == 1).sum())
    normal = np.full((64, 64, 3), 0.5)
    for seed in range(10):
        pasted, out_mask = paste_defect(normal, image, mask, _rng(seed))
        assert out_mask.shape == (64, 64) and out_mask.dtype == bool
        assert out_mask.any()
        assert ndi.label(out_mask, structure=np.ones((3, 3)))[1] == 1
        np.testing.assert_array_equal(pasted[~out_mask], normal[~out_mask])
        # Area scales with the square of a factor in 0.6 .. 1.4 (slack for the resize threshold).
        ratio = out_mask.sum() / big_area
        assert 0.6**2 * 0.8 <= ratio <= 1.4**2 * 1.2


def test_paste_defect_scale_stays_in_range():
    image, mask = _defect_source()
    ys, xs = np.nonzero(ndi.label(mask)[0] == 1)
    size = np.array([np.ptp(ys) + 1, np.ptp(xs) + 1])
    for seed in range(15):
        _, out_mask = paste_defect(np.zeros((80, 80, 3)), image, mask, _rng(seed), scale_range=(0.6, 1.4))
        oy, ox = np.nonzero(out_mask)
        factor = np.array([np.ptp(oy) + 1, np.ptp(ox) + 1]) / size
        assert np.all(factor >= 0.6 - 2 / size) and np.all(factor <= 1.4 + 2 / size)


def test_paste_defect_copy_at_scale_one_copies_the_defect_pixels():
    image, mask = _defect_source()
    component = ndi.label(mask)[0] == 1
    normal = np.zeros((50, 50, 3))
    pasted, out_mask = paste_defect(normal, image, mask, _rng(2), scale_range=(1.0, 1.0), blend="copy")
    assert out_mask.sum() == component.sum()
    np.testing.assert_allclose(np.sort(pasted[out_mask], axis=0), np.sort(image[component], axis=0), atol=1e-9)


def test_paste_defect_shrinks_a_defect_larger_than_the_normal_image():
    image = np.full((100, 100, 3), 0.8)
    mask = np.ones((100, 100), bool)
    _, out_mask = paste_defect(np.zeros((40, 40, 3)), image, mask, _rng(0), scale_range=(1.0, 1.4))
    assert out_mask.any() and out_mask.shape == (40, 40)


def test_paste_defect_rejects_empty_mask_and_unknown_blend():
    image, mask = _defect_source()
    with pytest.raises(DataError):
        paste_defect(np.zeros((40, 40, 3)), image, np.zeros_like(mask), _rng())
    with pytest.raises(ValueError):
        paste_defect(np.zeros((40, 40, 3)), image, mask, _rng(), blend="magic")
