"""Decoding image and mask files (rlad.data.images)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from rlad.data.images import load_image, load_mask
from rlad.errors import DataError


def _save(array: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_load_image_modes(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)

    out = load_image(_save(rgb, tmp_path / "rgb.png"))
    assert out.dtype == np.float32 and out.shape == (5, 7, 3)
    np.testing.assert_allclose(out, rgb / 255.0, atol=1e-6)

    out = load_image(_save(grey, tmp_path / "grey.png"))
    np.testing.assert_allclose(out, np.repeat(grey[:, :, None], 3, axis=2) / 255.0, atol=1e-6)

    wide = (grey.astype(np.uint16) * 257 + 3).astype(np.uint16)
    out = load_image(_save(wide, tmp_path / "sixteen.png"))
    np.testing.assert_allclose(out[:, :, 0], wide / 65535.0, atol=1e-6)
    assert out.max() <= 1.0

    alpha = np.full((5, 7), 255, dtype=np.uint8)
    alpha[0, 0] = 0
    alpha[1, 1] = 51
    out = load_image(_save(np.dstack([rgb, alpha]), tmp_path / "rgba.png"))
    assert out.shape == (5, 7, 3)
    np.testing.assert_allclose(out[0, 0], 0.0)  # fully transparent -> black
    np.testing.assert_allclose(out[1, 1], rgb[1, 1] / 255.0 * 0.2, atol=1e-6)
    np.testing.assert_allclose(out[2, 2], rgb[2, 2] / 255.0, atol=1e-6)

    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "palette.png")
    out = load_image(tmp_path / "palette.png")
    np.testing.assert_allclose(out, np.asarray(palette.convert("RGB")) / 255.0, atol=1e-6)

    Image.fromarray(grey > 128).save(tmp_path / "bits.png")
    out = load_image(tmp_path / "bits.png")
    assert set(np.unique(out)) <= {0.0, 1.0}

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    out = load_image(tmp_path / "cmyk.jpg")
    assert out.shape == (5, 7, 3) and 0.0 <= out.min() and out.max() <= 1.0


def test_load_image_bad_files_raise_data_error_naming_them(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(DataError, match=r"notes\.png: not an image"):
        load_image(text)
    with pytest.raises(DataError, match=r"missing\.png: file not found"):
        load_image(tmp_path / "missing.png")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    half = tmp_path / "half.jpg"
    half.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DataError, match=r"half\.jpg: corrupt or truncated image"):
        load_image(half)


def test_load_image_from_bytes_in_memory_decodes_as_from_the_file(tmp_path):
    """The server hands uploads to the decoder as bytes: same pixels, same shrinking, same errors."""
    rng = np.random.default_rng(2)
    for name, array, options in [("grey.jpg", rng.integers(0, 256, (90, 70), dtype=np.uint8), {"quality": 90}),
                                 ("rgba.png", rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), {})]:
        path = _save(array, tmp_path / name, **options)
        for max_side in (None, 32):
            from_bytes = load_image("upload", max_side=max_side, data=path.read_bytes())
            np.testing.assert_array_equal(from_bytes, load_image(path, max_side=max_side))
    half = (tmp_path / "grey.jpg").read_bytes()
    with pytest.raises(DataError, match=r"^upload: corrupt or truncated image"):
        load_image("upload", data=half[: len(half) // 2])
    with pytest.raises(DataError, match=r"^upload: not an image"):
        load_image("upload", data=b"hello")


def test_truncated_images_never_load_silently():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_load_image_refuses_when_someone_enabled_truncated_loading(tmp_path, monkeypatch):
    path = _save(np.zeros((4, 4, 3), np.uint8), tmp_path / "ok.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(path)


def test_load_mask_binarises_and_checks_size(tmp_path):
    soft = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(load_mask(_save(soft, tmp_path / "soft.png")), [[False, False, True, True]])
    labels = np.array([[0, 1, 1, 0]], dtype=np.uint8)  # a {0, 1} label map: 1 means defect
    np.testing.assert_array_equal(load_mask(_save(labels, tmp_path / "labels.png")), [[False, True, True, False]])
    red = np.zeros((1, 4, 3), dtype=np.uint8)
    red[0, 2] = (255, 0, 0)  # a colour mask: lit in any channel counts
    np.testing.assert_array_equal(load_mask(_save(red, tmp_path / "red.png")), [[False, False, True, False]])
    wide = np.array([[0, 32767, 32768, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(load_mask(_save(wide, tmp_path / "wide.png")), [[False, False, True, True]])
    Image.fromarray(np.array([[0.0, 0.4, 0.5, 1.0]], dtype=np.float32), mode="F").save(tmp_path / "float.tif")
    np.testing.assert_array_equal(load_mask(tmp_path / "float.tif"), [[False, False, True, True]])
    mask = load_mask(tmp_path / "soft.png", expected_size=(1, 4))
    assert mask.dtype == bool and mask.shape == (1, 4)
    with pytest.raises(DataError, match=r"soft\.png: mask size 1x4 differs from its image size 2x4"):
        load_mask(tmp_path / "soft.png", expected_size=(2, 4))
