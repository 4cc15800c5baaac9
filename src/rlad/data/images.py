"""Decode image and mask files: the pixels as float arrays, masks as bool arrays, sizes from headers.

Every failure (missing, truncated, not an image, unsupported mode or value range) is a `DataError`
that names the file. `IMAGE_EXTENSIONS` (in any case) are what rlad treats as image files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageFile

from rlad.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def is_image_file(path: Path) -> bool:
    # macOS writes "._name.png" AppleDouble files next to real images: image suffix, no image inside.
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _open_decoded(path: Path, data: bytes | None = None) -> Image.Image:
    """Open and fully decode one file (or its `data`, already in memory), turning every PIL/OS failure
    into a DataError naming it."""
    # A truncated file must fail loudly, never be padded with grey by PIL.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError(
            f"{path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code), so truncated "
            "images would load silently; set it back to False"
        )
    if data is None and not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            image.load()
            return image
    except MemoryError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large to decode safely ({exc})") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not an image (PIL cannot identify the file format)") from None
    except Exception as exc:  # OSError for truncated files, SyntaxError for broken PNGs, ...
        raise DataError(f"{path}: corrupt or truncated image ({type(exc).__name__}: {exc})") from None


def _pixel_array(image: Image.Image, path: Path) -> tuple[np.ndarray, float]:
    """The pixels as an (H, W) or (H, W, C) array and the value that means "full scale"."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image).astype(np.float32), 65535.0
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{path}: 32-bit integer image with values outside 0..65535 is not supported")
        return values.astype(np.float32), 65535.0
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise DataError(f"{path}: floating-point image must hold values in [0, 1]")
        return values, 1.0
    if mode not in ("1", "L", "LA", "RGB", "RGBA"):
        try:
            image = image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
        except Exception as exc:
            raise DataError(f"{path}: unsupported image mode {mode!r} ({exc})") from None
    if image.mode == "1":
        image = image.convert("L")
    return np.asarray(image).astype(np.float32), 255.0


def _shrunk(image: Image.Image, max_side: int) -> Image.Image:
    """Box-filter reduction by the smallest whole factor that brings the long side to `max_side` or
    below, done on the decoded pixels before the float conversion (an 8000 px photo would need
    gigabytes as float32). Modes PIL cannot reduce (1, P, 16-bit) are returned as they are."""
    factor = -(-max(image.size) // max_side)
    try:
        return image.reduce(factor)
    except ValueError:
        return image


def load_image(path: Path | str, max_side: int | None = None, data: bytes | None = None) -> np.ndarray:
    """Decode any supported image as float32 RGB (H, W, 3) in [0, 1].

    Grey is repeated over three channels; 16-bit images are scaled by 65535; palette images are
    expanded; an alpha channel is composited on black (transparent pixels carry no content). EXIF
    orientation is ignored on purpose: masks are drawn on the stored pixel grid. With `max_side`, a
    larger image comes back shrunk by a whole factor (`_shrunk`; `header_size` gives the original).
    `data`: the file's bytes when they are already in memory (an upload); `path` then only names them
    in errors.
    """
    pixels = load_image_channels(path, max_side, data)
    return pixels if pixels.shape[2] == 3 else np.repeat(pixels, 3, axis=2)


def load_image_channels(path: Path | str, max_side: int | None = None, data: bytes | None = None) -> np.ndarray:
    """`load_image` with grey left as one channel: float32 (H, W, 1) or (H, W, 3) in [0, 1] (a
    loader that resizes resizes one plane instead of three copies of it)."""
    path = Path(path)
    image = _open_decoded(path, data)
    if max_side and max(image.size) > max_side:
        image = _shrunk(image, max_side)
    pixels, full_scale = _pixel_array(image, path)
    pixels = pixels / full_scale
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] in (2, 4):  # LA / RGBA: composite on black
        pixels = pixels[:, :, :-1] * pixels[:, :, -1:]
    return np.ascontiguousarray(np.clip(pixels, 0.0, 1.0), dtype=np.float32)


def _mask_values(path: Path) -> tuple[np.ndarray, float]:
    """Raw single-channel mask values and their full scale. A colour mask counts a pixel as defect
    if any channel is lit (a red-on-black mask would vanish under a luminance conversion)."""
    image = _open_decoded(path)
    values, full_scale = _pixel_array(image, path)
    if values.ndim == 3:
        if values.shape[2] in (2, 4):
            values = values[:, :, :-1] * (values[:, :, -1:] / full_scale)
        values = values.max(axis=2)
    return values, full_scale


def _binarise(values: np.ndarray, full_scale: float) -> tuple[np.ndarray, bool]:
    """Mask -> (bool mask, was_binary). {0, 1} masks (label maps) mean 1 = defect; anything else
    is thresholded at half scale (>= 128 for 8-bit, >= 32768 for 16-bit, >= 0.5 for float)."""
    unique = np.unique(values)
    if np.isin(unique, (0.0, 1.0)).all():
        return values >= 1.0, True
    was_binary = bool(np.isin(unique, (0.0, full_scale)).all())
    threshold = 0.5 if full_scale == 1.0 else (full_scale + 1) / 2
    return values >= threshold, was_binary


def decode_mask(path: Path | str) -> tuple[np.ndarray, bool]:
    """The mask as bool (H, W), binarised as by `load_mask`, and whether the file already held two
    levels only ({0, full scale} or {0, 1}); no size check."""
    return _binarise(*_mask_values(Path(path)))


def load_mask(path: Path | str, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a mask as bool (H, W): {0, 255} and {0, 1} masks as they are, soft masks binarised
    at >= 128 (half scale). `expected_size` is the image's (height, width); a different mask size
    raises DataError naming both."""
    path = Path(path)
    values, full_scale = _mask_values(path)
    if expected_size is not None and tuple(values.shape[:2]) != tuple(expected_size):
        raise DataError(
            f"{path}: mask size {hw_text(values.shape[:2])} differs from its image size {hw_text(expected_size)} (HxW)"
        )
    return _binarise(values, full_scale)[0]


def hw_text(size: Iterable[int]) -> str:
    """A (height, width) size as messages write it: "HxW"."""
    height, width = size
    return f"{height}x{width}"


def header_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header only (cheap); DataError if it is not an image."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            return height, width
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not an image (PIL cannot identify the file format)") from None
    except Exception as exc:
        raise DataError(f"{path}: unreadable image header ({type(exc).__name__}: {exc})") from None
