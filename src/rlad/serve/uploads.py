"""Uploaded image bytes -> a decoded image, or a 4xx `UploadError` that says what is wrong.

The bytes go through the same decoder as `rlad predict` (`rlad.data.images`, via a private
temporary file), so an upload is accepted exactly when the same file would be scored from disk; on
top of that the declared content type, the detected format and the pixel count are checked before
the pixels are decoded.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from rlad.errors import DataError

# PIL's format names -> the content type an upload of that format declares.
FORMAT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "BMP": "image/bmp", "TIFF": "image/tiff"}
MIN_SIDE = 32  # as `rlad predict`: smaller images have nothing for the model to see


class UploadError(Exception):
    """A request the server refuses: HTTP `status` (4xx) and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    path: Path
    """The bytes on disk (valid inside `decoded_upload` only)."""
    height: int
    width: int


@contextlib.contextmanager
def decoded_upload(data: bytes, content_type: str | None, field: str, allowed: list[str], max_pixels: int) -> Iterator[Upload]:
    """Check one uploaded file; yields it on disk with its size (the caller decodes what it needs)."""
    from PIL import Image

    from rlad.data.images import header_size

    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in allowed:
        raise UploadError(415, f"field {field!r}: content type {declared or 'none'!r} is not accepted; send one of "
                               f"{', '.join(allowed)}")
    if not data:
        raise UploadError(400, f"field {field!r}: the file is empty (0 bytes)")
    with tempfile.TemporaryDirectory(prefix="rlad-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        try:
            with Image.open(path) as image:
                detected = FORMAT_TYPES.get(image.format or "")
        except Image.DecompressionBombError:
            raise UploadError(413, f"field {field!r}: the image has too many pixels to decode safely") from None
        except Exception:  # noqa: BLE001 - any unidentifiable file is the same user problem
            raise UploadError(400, f"field {field!r}: not an image (no known image format in the bytes)") from None
        if detected not in allowed:
            raise UploadError(415, f"field {field!r}: the bytes are {image.format or 'an unknown format'}, "
                                   f"which is not accepted ({', '.join(allowed)})")
        try:
            height, width = header_size(path)
        except DataError as exc:
            raise UploadError(400, f"field {field!r}: {_short(exc, path)}") from None
        if height * width > max_pixels:
            raise UploadError(413, f"field {field!r}: {width}x{height} is {height * width} pixels, more than the "
                                   f"server's limit of {max_pixels}")
        if min(height, width) < MIN_SIDE:
            raise UploadError(400, f"field {field!r}: {width}x{height} is too small to score (at least {MIN_SIDE} "
                                   "pixels a side)")
        yield Upload(path, height, width)


def load_upload(upload: Upload, field: str, max_side: int) -> np.ndarray:
    """The pixels as `rlad predict` decodes them (float32 RGB in [0, 1], shrunk above `max_side`)."""
    from rlad.data.images import load_image

    try:
        return load_image(upload.path, max_side=max_side)
    except DataError as exc:
        raise UploadError(400, f"field {field!r}: {_short(exc, upload.path)}") from None


def _short(exc: Exception, path: Path) -> str:
    """The decoder's message without the temporary file's name."""
    return str(exc).replace(f"{path}: ", "").replace(str(path), "the upload")
