"""Uploaded image bytes -> a decoded image, or a 4xx `UploadError` that says what is wrong.

The bytes go through the same decoder as `rlad predict` (`rlad.data.images.load_image`, handed the
bytes in memory), so an upload is accepted exactly when the same file would be scored from disk; on
top of that the declared content type, the detected format and the pixel count are checked from the
header before the pixels are decoded. A pixel run's uploads never touch the disk (a temporary folder
and file cost milliseconds per request on a journalled file system); a grounding run's policy reads
files, so its uploads are written to a private temporary folder (`upload_file`).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from rlad.errors import DataError

# PIL's format names -> the content type an upload of that format declares.
FORMAT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "BMP": "image/bmp", "TIFF": "image/tiff"}
MIN_SIDE = 32  # as `rlad predict`: smaller images have nothing for the model to see
UPLOAD_NAME = "upload"  # the name the decoder's messages give the bytes (dropped from the 4xx message)


class UploadError(Exception):
    """A request the server refuses: HTTP `status` (4xx) and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    data: bytes
    field: str
    height: int
    width: int


def check_upload(data: bytes, content_type: str | None, field: str, allowed: list[str], max_pixels: int) -> Upload:
    """One uploaded file checked from its declared type and its header; no pixel decoded yet."""
    from PIL import Image

    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in allowed:
        raise UploadError(415, f"field {field!r}: content type {declared or 'none'!r} is not accepted; send one of "
                               f"{', '.join(allowed)}")
    if not data:
        raise UploadError(400, f"field {field!r}: the file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            found = image.format
            width, height = image.size
    except Image.DecompressionBombError:
        raise UploadError(413, f"field {field!r}: the image has too many pixels to decode safely") from None
    except Exception:  # noqa: BLE001 - any unidentifiable file is the same user problem
        raise UploadError(400, f"field {field!r}: not an image (no known image format in the bytes)") from None
    if FORMAT_TYPES.get(found or "") not in allowed:
        raise UploadError(415, f"field {field!r}: the bytes are {found or 'an unknown format'}, "
                               f"which is not accepted ({', '.join(allowed)})")
    if height * width > max_pixels:
        raise UploadError(413, f"field {field!r}: {width}x{height} is {height * width} pixels, more than the "
                               f"server's limit of {max_pixels}")
    if min(height, width) < MIN_SIDE:
        raise UploadError(400, f"field {field!r}: {width}x{height} is too small to score (at least {MIN_SIDE} "
                               "pixels a side)")
    return Upload(data, field, height, width)


def load_upload(upload: Upload, max_side: int) -> np.ndarray:
    """The pixels as `rlad predict` decodes them (float32 RGB in [0, 1], shrunk above `max_side`)."""
    from rlad.data.images import load_image

    try:
        return load_image(UPLOAD_NAME, max_side=max_side, data=upload.data)
    except DataError as exc:
        message = str(exc).replace(f"{UPLOAD_NAME}: ", "", 1)
        raise UploadError(400, f"field {upload.field!r}: {message}") from None


@contextlib.contextmanager
def upload_file(upload: Upload) -> Iterator[Path]:
    """The upload's bytes in a private temporary file, removed afterwards (for code that reads files)."""
    with tempfile.TemporaryDirectory(prefix="rlad-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(upload.data)
        yield path
