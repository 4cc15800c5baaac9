"""Boxes: answer parsing, geometry, coordinate conventions and mask -> box.

Conventions (one for the whole library):

* A box is `(x1, y1, x2, y2)` in continuous coordinates with x1 < x2 and y1 < y2; its area is
  `(x2 - x1) * (y2 - y1)`. There is no "+1" anywhere: a box drawn from pixel columns 3..5 inclusive
  is `x1 = 3, x2 = 6` (see `mask_to_box`). Mixing inclusive and exclusive conventions inside one IoU
  under-scores small boxes, a bug seen in public grounding code.
* `ZERO_BOX = (0, 0, 0, 0)` means "no anomaly". It is a valid *answer* but not a valid *region*:
  geometric functions treat it as degenerate (IoU 0, area 0).
* Policies write boxes in their own coordinate convention (`CoordinateMode`); ground truth is stored
  in original-image pixels and converted with `to_policy_coords`, predictions come back with
  `to_pixels`. Metrics are always computed in original pixels.

Answer parsing decisions (documented in docs/methods.md as well):

* Two textual forms are accepted inside `<answer>...</answer>`: `(x1,y1),(x2,y2)` and
  `[x1,y1,x2,y2]`, with any whitespace around numbers and commas.
* Numbers may be integers or decimals (`12` or `12.5`): VLMs sometimes emit decimals and a box with
  decimals still says where the defect is, so localization rewards and metrics score it. The
  *format* reward, following the paper, only accepts integers; `ParsedAnswer.integer_coords` records
  which case applied.
* Negative numbers, swapped corners (x1 >= x2) and zero-width boxes other than the zero box are not
  valid boxes; they count in `n_boxes` but never become `box`. Nothing is silently reordered.
* The first valid box in the answer block is the answer (the paper's "first valid box wins").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import numpy as np

from rlad.errors import ConfigError, DataError

Box = tuple[float, float, float, float]

ZERO_BOX: Box = (0, 0, 0, 0)

# Qwen2.5-VL processor defaults (preprocessor_config.json of the released checkpoints).
QWEN25_FACTOR = 28
QWEN25_MIN_PIXELS = 4 * 28 * 28
QWEN25_MAX_PIXELS = 16384 * 28 * 28

_NUMBER = r"(-?\d+(?:\.\d+)?)"
_SEP = r"\s*,\s*"
_PAREN_BOX = rf"\(\s*{_NUMBER}{_SEP}{_NUMBER}\s*\){_SEP}\(\s*{_NUMBER}{_SEP}{_NUMBER}\s*\)"
_BRACKET_BOX = rf"\[\s*{_NUMBER}{_SEP}{_NUMBER}{_SEP}{_NUMBER}{_SEP}{_NUMBER}\s*\]"
_BOX_RE = re.compile(rf"{_PAREN_BOX}|{_BRACKET_BOX}")
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


# ----------------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class ParsedAnswer:
    """What a completion says, as far as the box task is concerned."""

    has_think: bool  # a <think>...</think> block precedes the <answer> block
    has_answer: bool  # at least one <answer>...</answer> block
    box: Box | None  # first valid box in the answer block (zero box included); None if none
    n_boxes: int  # box-shaped matches in the answer block(s), valid or not
    error: str | None  # why no usable box came out, for logs; None when `box` is set
    integer_coords: bool = False  # the chosen box was written with integers only
    think: str = ""  # text inside the think block ("" when absent)
    answer: str = ""  # text inside the (first) answer block ("" when absent)


def split_blocks(text: str) -> tuple[str | None, list[str]]:
    """(think text or None, answer block texts), with the answer blocks that follow the think block.

    When a think block exists, answers inside it are reasoning drafts, not answers, so only answer
    blocks after `</think>` count; when there are none, answers anywhere count (no think, though).
    """
    think = _THINK_RE.search(text)
    if think is not None:
        after = [m.group(1) for m in _ANSWER_RE.finditer(text, think.end())]
        if after:
            return think.group(1), after
    return None, [m.group(1) for m in _ANSWER_RE.finditer(text)]


def _valid_box(values: Sequence[float]) -> bool:
    x1, y1, x2, y2 = values
    if min(values) < 0:
        return False
    return (x1 < x2 and y1 < y2) or tuple(values) == (0, 0, 0, 0)


def parse_answer(text: str) -> ParsedAnswer:
    """Parse a completion of the box task. Never raises on any string."""
    if not isinstance(text, str):
        return ParsedAnswer(False, False, None, 0, f"completion is {type(text).__name__}, not text")
    think, answers = split_blocks(text)
    if not answers:
        return ParsedAnswer(think is not None, False, None, 0, "no <answer>...</answer> block",
                            think=think or "")
    matches = [m for block in answers for m in _BOX_RE.finditer(block)]
    common = dict(has_think=think is not None, has_answer=True, n_boxes=len(matches),
                  think=think or "", answer=answers[0])
    if not matches:
        return ParsedAnswer(box=None, error="no box in the answer block", **common)
    for match in matches:
        raw = [g for g in match.groups() if g is not None]
        values = [float(v) for v in raw]
        if _valid_box(values):
            box = tuple(int(v) if v.is_integer() else v for v in values)
            integer = all("." not in v for v in raw)
            return ParsedAnswer(box=box, error=None, integer_coords=integer, **common)
    return ParsedAnswer(box=None, error=f"no valid box (first: {matches[0].group(0)!r})", **common)


def format_answer(box: Sequence[float], think: str = "", style: str = "paren") -> str:
    """`<think>..</think><answer>(x1,y1),(x2,y2)</answer>`; style "bracket" gives `[x1,y1,x2,y2]`.

    Coordinates must be integral (policy coordinates are integers); anything else is a caller bug.
    """
    values = []
    for v in box:
        if not float(v).is_integer():
            raise ValueError(f"format_answer needs integer coordinates, got {tuple(box)}")
        values.append(int(v))
    if len(values) != 4:
        raise ValueError(f"a box has 4 coordinates, got {tuple(box)}")
    x1, y1, x2, y2 = values
    if style == "paren":
        body = f"({x1},{y1}),({x2},{y2})"
    elif style == "bracket":
        body = f"[{x1},{y1},{x2},{y2}]"
    else:
        raise ConfigError(f"answer style {style!r} is not one of 'paren', 'bracket'")
    return f"<think>{think}</think><answer>{body}</answer>"


# ---------------------------------------------------------------------------------- geometry
def is_zero_box(box) -> bool:
    return box is not None and len(box) == 4 and all(float(v) == 0 for v in box)


def is_degenerate(box) -> bool:
    """True for None, the zero box and any box without positive width and height."""
    if box is None or len(box) != 4:
        return True
    x1, y1, x2, y2 = (float(v) for v in box)
    return not (x2 > x1 and y2 > y1) or not all(math.isfinite(v) for v in (x1, y1, x2, y2))


def box_area(box) -> float:
    if box is None:
        return 0.0
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def box_center(box) -> tuple[float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def box_diagonal(box) -> float:
    x1, y1, x2, y2 = (float(v) for v in box)
    return math.hypot(max(0.0, x2 - x1), max(0.0, y2 - y1))


def box_intersection(a, b) -> float:
    """Area of overlap; 0 when either box is None or degenerate."""
    if is_degenerate(a) or is_degenerate(b):
        return 0.0
    w = min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0]))
    h = min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1]))
    return max(0.0, w) * max(0.0, h)


def box_iou(a, b) -> float:
    """Intersection over union; 0 when either box is None or degenerate (the zero box included)."""
    inter = box_intersection(a, b)
    if inter == 0.0:
        return 0.0
    return inter / (box_area(a) + box_area(b) - inter)


def clip_box(box, size_hw: tuple[int, int]) -> Box:
    """Clamp to the image `[0, W] x [0, H]`; the result may be degenerate if the box lay outside."""
    h, w = size_hw
    x1, y1, x2, y2 = (float(v) for v in box)
    return (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))


# ---------------------------------------------------------------------- coordinate conventions
class CoordinateMode(str, Enum):
    """How a policy writes coordinates in its answers.

    PIXELS: original-image pixels (rlad's compact grounder).
    RELATIVE_1000: integers 0..1000 relative to the image (Qwen2-VL, Qwen3-VL).
    RESIZED: pixels of the image after the processor's resize (Qwen2.5-VL; see `qwen25_resized_hw`).
    """

    PIXELS = "pixels"
    RELATIVE_1000 = "relative1000"
    RESIZED = "resized"


def coordinate_mode(value) -> CoordinateMode:
    """Parse a config value into a `CoordinateMode`, with an error listing the valid ones."""
    try:
        return CoordinateMode(value)
    except ValueError:
        valid = ", ".join(m.value for m in CoordinateMode)
        raise ConfigError(f"coordinate mode {value!r} is not one of {valid}") from None


def _frame_size(mode, original_hw, resized_hw) -> tuple[int, int]:
    """(width, height) of the policy's coordinate frame for an image of `original_hw`."""
    mode = coordinate_mode(mode)
    h, w = original_hw
    if h <= 0 or w <= 0:
        raise DataError(f"image size must be positive, got {tuple(original_hw)}")
    if mode is CoordinateMode.PIXELS:
        return w, h
    if mode is CoordinateMode.RELATIVE_1000:
        return 1000, 1000
    rh, rw = resized_hw if resized_hw is not None else qwen25_resized_hw(h, w)
    return rw, rh


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


def to_policy_coords(box_px, mode, original_hw, resized_hw=None) -> tuple[int, int, int, int]:
    """Original-pixel box -> integer box in the policy's convention; the zero box stays zero.

    Rounds to the nearest integer and widens to at least one unit, so a tiny real box never turns
    into a degenerate box (or into the zero box, which would mean "normal"). `resized_hw` defaults
    to the Qwen2.5-VL processor's default resize of `original_hw`.
    """
    if is_zero_box(box_px):
        return (0, 0, 0, 0)
    h, w = original_hw
    frame_w, frame_h = _frame_size(mode, original_hw, resized_hw)
    sx, sy = frame_w / w, frame_h / h
    x1, y1, x2, y2 = (float(v) for v in box_px)
    if x1 >= w or y1 >= h or x2 <= 0 or y2 <= 0:
        raise DataError(f"box {tuple(box_px)} lies outside the {w}x{h} image")
    x1, y1, x2, y2 = clip_box((x1, y1, x2, y2), (h, w))
    out = [_round_half_up(x1 * sx), _round_half_up(y1 * sy), _round_half_up(x2 * sx), _round_half_up(y2 * sy)]
    for lo, hi, limit in ((0, 2, frame_w), (1, 3, frame_h)):
        if out[hi] <= out[lo]:
            if out[lo] + 1 <= limit:
                out[hi] = out[lo] + 1
            else:
                out[lo] = out[hi] - 1
    return tuple(out)


def to_pixels(box, mode, original_hw, resized_hw=None) -> Box:
    """Policy-convention box -> original-pixel floats, clipped to the image; zero box stays zero.

    Clipping matters because models do emit coordinates past the frame (x > 1000 was reported for a
    hosted Qwen-VL); the part outside the image cannot overlap anything.
    """
    if is_zero_box(box):
        return ZERO_BOX
    frame_w, frame_h = _frame_size(mode, original_hw, resized_hw)
    sx, sy = frame_w / original_hw[1], frame_h / original_hw[0]
    x1, y1, x2, y2 = (float(v) for v in box)
    return clip_box((x1 / sx, y1 / sy, x2 / sx, y2 / sy), original_hw)


def qwen25_resized_hw(h: int, w: int, factor: int = QWEN25_FACTOR, min_pixels: int = QWEN25_MIN_PIXELS,
                      max_pixels: int = QWEN25_MAX_PIXELS) -> tuple[int, int]:
    """The image size Qwen2.5-VL's processor feeds the model (its "smart resize" rule).

    Each side is rounded to the nearest multiple of `factor`; if the area then exceeds `max_pixels`
    (falls below `min_pixels`) both sides are scaled down (up) by the same factor, keeping the aspect
    ratio, and floored (ceiled) to multiples of `factor`.
    """
    if h <= 0 or w <= 0:
        raise DataError(f"image size must be positive, got {(h, w)}")
    if max(h, w) / min(h, w) > 200:
        raise DataError(f"aspect ratio of {(h, w)} exceeds 200, which the Qwen2.5-VL processor rejects")
    # Python's round() (half to even) is what the reference processor uses; keep it for parity.
    rh = max(factor, round(h / factor) * factor)
    rw = max(factor, round(w / factor) * factor)
    if rh * rw > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        rh = max(factor, math.floor(h / beta / factor) * factor)
        rw = max(factor, math.floor(w / beta / factor) * factor)
    elif rh * rw < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        rh = math.ceil(h * beta / factor) * factor
        rw = math.ceil(w * beta / factor) * factor
    return rh, rw


# ------------------------------------------------------------------------------ mask -> box
def mask_to_box(mask: np.ndarray, mode: str = "largest", connectivity: int = 8) -> Box:
    """Bounding box of a defect mask in pixel coordinates; ZERO_BOX when the mask is empty.

    mode "largest": the largest connected component (ties: the one met first in raster order);
    "whole": every non-zero pixel. The box covers whole pixels: x1 = first column, x2 = last
    column + 1 (same for rows), so a single pixel at (r, c) gives (c, r, c + 1, r + 1).
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise DataError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    if mode not in ("largest", "whole"):
        raise ConfigError(f"box mode {mode!r} is not one of 'largest', 'whole'")
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity}")
    fg = mask > 0
    if not fg.any():
        return ZERO_BOX
    if mode == "largest":
        structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
        labels, n = ndimage.label(fg, structure=structure)
        if n > 1:
            sizes = np.bincount(labels.ravel())[1:]
            fg = labels == (int(np.argmax(sizes)) + 1)
    rows = np.flatnonzero(fg.any(axis=1))
    cols = np.flatnonzero(fg.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def mask_to_boxes(mask: np.ndarray, min_area: int = 1, connectivity: int = 8) -> list[Box]:
    """One box per connected component of `mask` (largest first), skipping components smaller than
    `min_area` pixels; same pixel convention as `mask_to_box`. Empty mask -> []."""
    from scipy import ndimage

    fg = np.asarray(mask) > 0
    if not fg.any():
        return []
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    labels, n = ndimage.label(fg, structure=structure)
    sizes = np.bincount(labels.ravel())[1:]
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labels)):
        if region is None or sizes[index] < min_area:
            continue
        rows, cols = region
        boxes.append((sizes[index], (cols.start, rows.start, cols.stop, rows.stop)))
    return [tuple(int(v) for v in box) for _, box in sorted(boxes, key=lambda item: -item[0])]
