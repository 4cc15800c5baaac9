"""Image regions for localization questions: the image cut into a 3 x 3 grid of equal thirds, named
"top left" ... "bottom right". The question builder reads the right region off a ground-truth mask
and the training-free answerer off an anomaly map, with the same grid (`region_mass`), so the two
cannot disagree on where a region's border is.
"""

from __future__ import annotations

import numpy as np

ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "middle", "right")


def _name(row: int, col: int) -> str:
    if row == 1 and col == 1:
        return "center"
    return f"{ROWS[row]} {COLUMNS[col]}"


REGION_NAMES = tuple(_name(r, c) for r in range(3) for c in range(3))


def _edges(length: int) -> list[int]:
    return [round(length * k / 3) for k in range(4)]


def region_mass(values: np.ndarray) -> dict[str, float]:
    """The sum of a non-negative (H, W) array (a mask, or a map) over each grid region."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) array, got shape {values.shape}")
    rows, cols = _edges(values.shape[0]), _edges(values.shape[1])
    return {_name(r, c): float(values[rows[r]:rows[r + 1], cols[c]:cols[c + 1]].sum())
            for r in range(3) for c in range(3)}


def parse_region(text: str) -> str | None:
    """The region an option names ("Top left", "the top-left part", "centre"), or None."""
    words = text.lower().replace("-", " ").replace(".", " ").replace("centre", "center").split()
    words = [w for w in words if w not in ("the", "of", "image", "part", "region", "corner", "side", "area", "in", "at")]
    candidate = " ".join(words)
    aliases = {"top": "top middle", "bottom": "bottom middle", "left": "middle left", "right": "middle right",
               "middle": "center", "middle middle": "center", "upper left": "top left", "upper right": "top right",
               "lower left": "bottom left", "lower right": "bottom right"}
    candidate = aliases.get(candidate, candidate)
    return candidate if candidate in REGION_NAMES else None
