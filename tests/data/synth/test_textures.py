"""Texture tiles (rlad.data.synth.textures); the `tile` fixture is in conftest.py."""

from __future__ import annotations

import numpy as np

from rlad.data.synth.textures import texture_tile


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_texture_tile_is_rgb_float_in_range_and_tinted(tile):
    assert tile.shape == (96, 96, 3) and tile.dtype == np.float32
    assert 0.0 <= tile.min() and tile.max() <= 1.0
    brick = texture_tile("brick", 64, _rng(0))
    assert brick[..., 0].mean() > brick[..., 2].mean()  # brick is tinted warm
