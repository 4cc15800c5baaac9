"""The compact grounder's answer as a token sequence: [presence, x1, x2, y1, y2] bins (just
[presence] for the zero box), and the text it renders to (the answer format every policy writes)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlad.boxes import format_answer, is_zero_box

N_TOKENS = 5  # presence, x1, x2, y1, y2


def box_to_tokens(box: Sequence[float], bins: int) -> list[int]:
    """A 0..1000 box -> [presence, x1, x2, y1, y2] bins (just [0] for the zero box).

    Start coordinates floor into their bin, end coordinates take the bin that contains them, so the
    rendered box (`tokens_to_box`) always covers the original one (up to one bin of slack per side).
    """
    if is_zero_box(box):
        return [0]
    x1, y1, x2, y2 = (float(v) for v in box)

    def start(v):
        return int(min(bins - 1, max(0, np.floor(v * bins / 1000.0))))

    def end(v, first):
        return int(min(bins - 1, max(first, np.ceil(v * bins / 1000.0) - 1)))

    bx1, by1 = start(x1), start(y1)
    return [1, bx1, end(x2, bx1), by1, end(y2, by1)]


def tokens_to_box(tokens: Sequence[int], bins: int) -> tuple[int, int, int, int]:
    if not tokens or tokens[0] == 0:
        return (0, 0, 0, 0)
    _, bx1, bx2, by1, by2 = (int(t) for t in tokens)

    def edge(b):
        return int(round(1000.0 * b / bins))

    return (edge(bx1), edge(by1), edge(bx2 + 1), edge(by2 + 1))


_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "centre", "right")


def think_text(box: Sequence[int]) -> str:
    """The templated reasoning (a function of the box only, so it carries no information of its own)."""
    if is_zero_box(box):
        return "Comparing the query with the reference, nothing differs beyond normal variation."
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2000.0, (y1 + y2) / 2000.0
    where = f"{_ROWS[min(2, int(cy * 3))]} {_COLS[min(2, int(cx * 3))]}"
    return (f"Comparing the query with the reference, the {where} part differs: a region about "
            f"{round((x2 - x1) / 10)}% wide and {round((y2 - y1) / 10)}% tall.")


def render(tokens: Sequence[int], bins: int) -> str:
    box = tokens_to_box(tokens, bins)
    return format_answer(box, think=think_text(box))
