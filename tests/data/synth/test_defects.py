"""The defect catalogue and its exact masks (rlad.data.synth.defects); the `tile` fixture is in
conftest.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from rlad.data.synth.defects import DEFECT_KINDS, MIN_CHANGE, add_defect
from rlad.data.synth.textures import texture_tile


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_add_defect_mask_is_exact(kind, tile):
    source = texture_tile("brick", 96, _rng(99))
    for seed in range(6):
        out, mask = add_defect(tile, kind, _rng(seed), source=source if seed % 2 else None)
        assert out.shape == tile.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert mask.shape == tile.shape[:2] and mask.dtype == bool and mask.any()
        change = np.abs(out.astype(np.float64) - tile.astype(np.float64)).max(axis=2)
        # Every masked pixel visibly changed...
        assert change[mask].min() >= MIN_CHANGE - 1e-6
        # ...and nothing changed beyond the mask's 1-pixel anti-aliased fringe (none at all for patch).
        allowed = mask if kind == "patch" else ndi.binary_dilation(mask, structure=np.ones((3, 3)))
        assert not np.any((change > 1e-6) & ~allowed)
        # The fringe is faint compared with the defect itself.
        fringe = (change > 1e-6) & ~mask
        if fringe.any():
            assert change[fringe].mean() < change[mask].mean()


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_add_defect_is_deterministic_per_seed(kind, tile):
    a, mask_a = add_defect(tile, kind, _rng(4))
    b, mask_b = add_defect(tile, kind, _rng(4))
    c, mask_c = add_defect(tile, kind, _rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert not np.array_equal(mask_a, mask_c)


def test_add_defect_varies_size_across_seeds(tile):
    areas = {kind: [add_defect(tile, kind, _rng(s))[1].sum() for s in range(8)] for kind in DEFECT_KINDS}
    for kind, values in areas.items():
        assert max(values) > 1.5 * min(values), (kind, values)
        assert max(values) < 0.35 * tile.shape[0] * tile.shape[1], (kind, values)


def test_add_defect_rejects_unknown_kind_and_grey_images(tile):
    with pytest.raises(ValueError, match="unknown kind"):
        add_defect(tile, "dent", _rng())
    with pytest.raises(ValueError):
        add_defect(tile[..., 0], "hole", _rng())
