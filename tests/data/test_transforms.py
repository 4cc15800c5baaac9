from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rlad.data.folder import discover
from rlad.data.images import load_image
from rlad.data.transforms import (
    augment_pair,
    augmentation_matrix,
    load_sample,
    load_samples,
    resize_image,
    resize_map_to,
    resize_mask,
)


def test_resize_image_shapes_and_range():
    rng = np.random.default_rng(0)
    image = rng.random((48, 64, 3), dtype=np.float32)
    out = resize_image(image, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert resize_image(image, (24, 40)).shape == (24, 40, 3)
    same = resize_image(image, (48, 64))
    np.testing.assert_array_equal(same, image)
    assert same is not image


def test_resize_image_preserves_constant_and_antialiases():
    constant = np.full((40, 40, 3), 0.25, dtype=np.float32)
    np.testing.assert_allclose(resize_image(constant, 13), 0.25, atol=1e-5)
    # A one-pixel checkerboard shrunk 4x must average to grey, not alias to black or white.
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    out = resize_image(np.dstack([checker] * 3), 16)
    np.testing.assert_allclose(out, 0.5, atol=0.02)


def test_resize_mask_area_rule_and_binary():
    mask = np.zeros((8, 8), dtype=bool)
    mask[0:4, 0:2] = True  # covers half of the top-left 4x4 block
    mask[4:8, 4:5] = True  # a quarter of the bottom-right block
    out = resize_mask(mask, 2)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, [[True, False], [False, False]])
    up = resize_mask(np.array([[1, 0], [0, 1]], dtype=np.uint8), 4)
    np.testing.assert_array_equal(up, np.kron(np.eye(2), np.ones((2, 2))).astype(bool))


def test_resize_mask_keeps_a_tiny_defect():
    mask = np.zeros((100, 100), dtype=bool)
    mask[50, 50] = True
    out = resize_mask(mask, 10)
    assert out.sum() >= 1 and out[5, 5]
    assert not resize_mask(np.zeros((100, 100), dtype=bool), 10).any()


def test_resize_map_to_original_size():
    small = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    out = resize_map_to(small, (48, 64))
    assert out.shape == (48, 64) and out.dtype == np.float32
    assert out[0, 0] < out[-1, -1]
    assert small.min() - 1e-6 <= out.min() and out.max() <= small.max() + 1e-6
    with pytest.raises(ValueError):
        resize_map_to(np.zeros((2, 4, 4)), (8, 8))


def test_load_sample(tiny_mvtec):
    folder = discover(tiny_mvtec)
    defect = next(s for s in folder.test if s.defect_type == "hole")
    image, mask = load_sample(defect, 32)
    assert image.shape == (3, 32, 32) and image.dtype == np.float32
    assert mask.shape == (32, 32) and mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    # The drawn defect is dark: masked pixels are darker than the rest.
    assert image.mean(axis=0)[mask > 0].mean() < image.mean(axis=0)[mask == 0].mean() - 0.2
    normal_image, normal_mask = load_sample(folder.train[0], 32)
    assert not normal_mask.any()
    expected = resize_image(load_image(folder.train[0].path), 32).transpose(2, 0, 1)
    np.testing.assert_allclose(normal_image, expected)


@pytest.mark.parametrize("mode", ["L", "I;16", "LA", "RGB"])
@pytest.mark.parametrize("size", [24, 40])  # resized, and already at size
def test_grey_images_load_as_three_equal_planes_like_the_resized_decode(tmp_path, mode, size):
    """The loader resizes grey once and repeats it at the end: the same pixels as decoding to RGB and
    resizing each channel (`resize_image(load_image(...))`), for every way a file can be grey."""
    from rlad.data.folder import Sample

    rng = np.random.default_rng(0)
    values = rng.integers(0, 255, (40, 40, len(mode) if mode in ("LA", "RGB") else 1), dtype=np.uint8)
    if mode == "I;16":
        image = Image.fromarray(values[:, :, 0].astype(np.uint16) * 257)
    else:
        image = Image.fromarray(values if values.shape[2] > 1 else values[:, :, 0], mode=mode)
    path = tmp_path / "image.png"
    image.save(path)
    sample = Sample(path=path, split="test", label=0, defect_type="good", mask_path=None, size=(40, 40))
    expected = resize_image(load_image(path), size).transpose(2, 0, 1)
    loaded, _ = load_sample(sample, size)
    assert loaded.shape == (3, size, size)
    np.testing.assert_array_equal(loaded, expected)
    cached, _ = load_samples([sample], size, workers=1)
    np.testing.assert_array_equal(cached[0], np.round(expected * 255.0).astype(np.uint8))


@pytest.mark.parametrize("workers", [1, 2])
def test_load_samples_cache(tiny_mvtec, workers):
    folder = discover(tiny_mvtec)
    images, masks = load_samples(folder.test, 24, workers=workers)
    assert images.shape == (7, 3, 24, 24) and images.dtype == np.uint8
    assert masks.shape == (7, 24, 24) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1}
    assert [bool(m.any()) for m in masks] == [bool(s.label) for s in folder.test]
    single_image, single_mask = load_sample(folder.test[4], 24)
    np.testing.assert_allclose(images[4] / 255.0, single_image, atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(masks[4], single_mask)
    empty_images, empty_masks = load_samples([], 24)
    assert empty_images.shape == (0, 3, 24, 24) and empty_masks.shape == (0, 24, 24)


def test_load_samples_reports_bad_file(tiny_mvtec):
    from rlad.errors import DataError

    folder = discover(tiny_mvtec)
    (tiny_mvtec / "train/good/002.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"002\.png"):
        load_samples(folder.train, 16)


def _square_pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((size, size), dtype=np.float32)
    mask[20:36, 24:44] = 1.0
    rng = np.random.default_rng(0)
    image = (0.3 + 0.05 * rng.random((3, size, size))).astype(np.float32)
    image[:, mask > 0] = 0.9  # the image's bright region is exactly the mask
    return image, mask


def test_augment_pair_moves_image_and_mask_together():
    image, mask = _square_pair()
    rng = np.random.default_rng(3)
    moved = 0
    for _ in range(10):
        out_image, out_mask = augment_pair(image, mask, rng)
        assert out_image.shape == image.shape and out_image.dtype == image.dtype
        assert out_mask.shape == mask.shape and out_mask.dtype == mask.dtype
        assert set(np.unique(out_mask)) <= {0.0, 1.0}
        bright = out_image.mean(axis=0) > 0.6
        # Identical warp: the bright region and the mask agree except on interpolated edges.
        disagreement = np.logical_xor(bright, out_mask > 0).sum()
        assert disagreement <= 0.2 * out_mask.sum() + 4
        moved += not np.array_equal(out_mask, mask)
    assert moved >= 8


def test_augment_pair_keeps_uint8_and_is_seeded():
    image, mask = _square_pair()
    image8 = np.round(image * 255).astype(np.uint8)
    mask8 = mask.astype(np.uint8)
    a = augment_pair(image8, mask8, np.random.default_rng(7))
    b = augment_pair(image8, mask8, np.random.default_rng(7))
    assert a[0].dtype == np.uint8 and a[1].dtype == np.uint8
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    bool_mask = augment_pair(image, mask > 0, np.random.default_rng(7))[1]
    assert bool_mask.dtype == bool


def test_augment_pair_without_geometry_only_flips():
    image, mask = _square_pair()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        out_image, out_mask = augment_pair(image, mask, rng, max_rotation=0, max_shift=0, max_shear=0)
        assert out_mask.sum() == mask.sum()
        seen.add(out_mask.tobytes())
    assert len(seen) == 4  # identity, horizontal, vertical, both
    out_image, out_mask = augment_pair(image, mask, rng, flip=False, max_rotation=0, max_shift=0, max_shear=0)
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)


def test_augmentation_matrix_pure_shift_and_rotation():
    matrix, offset = augmentation_matrix((10, 10), 0.0, (2.0, -3.0), 0.0)
    np.testing.assert_allclose(matrix, np.eye(2))
    np.testing.assert_allclose(offset, [-2.0, 3.0])  # output (r, c) reads input (r - 2, c + 3)
    matrix, offset = augmentation_matrix((11, 11), 90.0, (0.0, 0.0), 0.0)
    center = np.array([5.0, 5.0])
    np.testing.assert_allclose(matrix @ center + offset, center, atol=1e-9)  # rotation about the centre
    np.testing.assert_allclose(abs(np.linalg.det(matrix)), 1.0)


def test_augment_pair_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        augment_pair(np.zeros((3, 8, 8)), np.zeros((8, 9)), np.random.default_rng(0))


def test_load_sample_on_real_image_size(tmp_path):
    # A grey 16-bit image with an odd size goes through the whole path to (3, S, S).
    Image.fromarray(np.full((37, 53), 40000, dtype=np.uint16)).save(tmp_path / "a.png")
    from rlad.data.folder import Sample

    sample = Sample(tmp_path / "a.png", "train", 0, "good", None, (37, 53))
    image, mask = load_sample(sample, 16)
    np.testing.assert_allclose(image, 40000 / 65535, atol=1e-5)
    assert mask.shape == (16, 16) and not mask.any()
