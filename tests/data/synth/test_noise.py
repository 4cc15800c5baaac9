"""Perlin noise and Perlin masks (rlad.data.synth.noise)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from rlad.data.synth.noise import perlin_mask, perlin_noise


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_perlin_noise_is_bounded_deterministic_and_seed_dependent():
    a = perlin_noise((70, 90), 16, _rng(1))
    b = perlin_noise((70, 90), 16, _rng(1))
    c = perlin_noise((70, 90), 16, _rng(2))
    assert a.shape == (70, 90)
    assert np.abs(a).max() <= 1.0
    assert a.std() > 0.05  # not flat
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_perlin_noise_larger_scale_is_smoother():
    def roughness(scale: int) -> float:
        noise = perlin_noise((128, 128), scale, _rng(3))
        return float(np.abs(np.diff(noise, axis=1)).mean() / noise.std())

    assert roughness(64) < roughness(16) < roughness(4)


def test_perlin_noise_octaves_stay_bounded():
    noise = perlin_noise((64, 64), 32, _rng(0), octaves=4)
    assert np.abs(noise).max() <= 1.0


@pytest.mark.parametrize("bad", [dict(scale=0), dict(octaves=0)])
def test_perlin_noise_rejects_bad_arguments(bad):
    kwargs = dict(scale=8, octaves=1) | bad
    with pytest.raises(ValueError):
        perlin_noise((16, 16), kwargs["scale"], _rng(), octaves=kwargs["octaves"])


@pytest.mark.parametrize("single", [False, True])
def test_perlin_mask_area_in_range_and_never_empty(single):
    for seed in range(25):
        mask = perlin_mask((64, 80), _rng(seed), min_area_fraction=0.02, max_area_fraction=0.1,
                           single_component=single)
        assert mask.dtype == bool and mask.shape == (64, 80)
        assert mask.any()
        assert 0.02 <= mask.mean() <= 0.1
        if single:
            assert ndi.label(mask, structure=np.ones((3, 3)))[1] == 1


def test_perlin_mask_rejects_inverted_area_bounds():
    with pytest.raises(ValueError):
        perlin_mask((32, 32), _rng(), min_area_fraction=0.5, max_area_fraction=0.1)
