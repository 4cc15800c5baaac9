"""The labelled panel a person reads instead of the numbers (rlad predict's overlays, the report's worst errors)."""

from __future__ import annotations

import numpy as np

from rlad.viz import BAD_COLOUR, labelled_panel


def test_a_long_title_on_a_narrow_image_is_written_whole():
    image = np.full((48, 64, 3), 0.5, np.float32)
    panel = labelled_panel(image, np.zeros((48, 64), np.float32), [], "score 0.99   ANOMALOUS   (threshold 0.50)", True)
    strip = panel[:12]
    assert strip.shape[1] == 2 * 64 + 4
    text = (strip != np.array(BAD_COLOUR, np.uint8)).any(axis=2)  # white letters on the red strip
    assert text[:, :20].any()  # the title starts at the left ...
    assert not text[:, -5:].any()  # ... and ends before the panel's edge instead of being cut off there
