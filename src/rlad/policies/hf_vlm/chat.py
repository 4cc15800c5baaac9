"""A `Prompt` as chat messages: the system text (the answer format), then one user turn with the
images in reading order (reference first, then query) followed by the instruction.

Images appear as `{"type": "image"}` placeholders, the conversational form transformers processors
and TRL both take; the images themselves travel beside the messages in the same order.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from rlad.rl.rollout import Prompt


def messages(prompt: Prompt) -> list[dict]:
    turns = []
    if prompt.system:
        turns.append({"role": "system", "content": [{"type": "text", "text": prompt.system}]})
    content = [{"type": "image"} for _ in prompt.images]
    if prompt.text:
        content.append({"type": "text", "text": prompt.text})
    turns.append({"role": "user", "content": content})
    return turns


@lru_cache(maxsize=256)
def _load_rgb(path: str, mtime_ns: int):
    import numpy as np
    from PIL import Image

    from rlad.data.images import load_image

    return Image.fromarray(np.round(load_image(path) * 255.0).astype(np.uint8))


def load_images(prompt: Prompt) -> list:
    """The prompt's images as 8-bit RGB PIL images, decoded like every image in rlad (a small cache:
    the prompt of a group is decoded once)."""
    from rlad.errors import DataError

    out = []
    for path in prompt.images:
        try:
            mtime = Path(path).stat().st_mtime_ns
        except OSError:
            raise DataError(f"{path}: file not found") from None
        out.append(_load_rgb(str(path), mtime))
    return out
