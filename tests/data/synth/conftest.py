"""Fixtures shared by the synth tests."""

from __future__ import annotations

import numpy as np
import pytest

from rlad.data.synth.textures import texture_tile


@pytest.fixture(scope="module")
def tile() -> np.ndarray:
    """A 96x96 gravel tile, the canvas the defect tests draw on."""
    return texture_tile("gravel", 96, np.random.default_rng(11))
