"""The shared map operations: one Gaussian kernel, its blur with either border rule, the separable
upsample-and-smooth every feature model and NBS use, and the grey image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from rlad.models.maps import area_resize, gaussian_blur, gaussian_kernel, grey, scaled_sigma, smoothing_matrix, upsample_and_smooth

# scipy's names for torch's padding modes: "mirror" does not repeat the edge pixel (torch "reflect"),
# "nearest" repeats it (torch "replicate").
SCIPY_MODE = {"reflect": "mirror", "replicate": "nearest"}


@pytest.mark.parametrize("sigma, radius", [(0.2, 1), (1.0, 3), (2.0, 6), (4.0, 12), (5.3, 16)])
def test_kernel_is_a_normalised_gaussian_of_radius_three_sigma(sigma, radius):
    kernel = gaussian_kernel(sigma)
    assert kernel.shape == (2 * radius + 1,) and kernel.dtype == torch.float32
    assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(kernel, kernel.flip(0))
    taps = np.arange(-radius, radius + 1)
    expected = np.exp(-(taps**2) / (2 * sigma**2))
    np.testing.assert_allclose(kernel.numpy(), expected / expected.sum(), rtol=1e-5)
    assert gaussian_kernel(sigma, torch.float64).dtype == torch.float64


@pytest.mark.parametrize("padding", ["reflect", "replicate"])
@pytest.mark.parametrize("sigma", [0.7, 2.0, 3.5])
def test_blur_equals_a_separable_correlation_with_the_border_rule(padding, sigma):
    maps = torch.rand(2, 1, 23, 31, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weights = gaussian_kernel(sigma, torch.float64).numpy()
    want = ndimage.correlate1d(maps.numpy(), weights, axis=3, mode=SCIPY_MODE[padding])
    want = ndimage.correlate1d(want, weights, axis=2, mode=SCIPY_MODE[padding])
    got = gaussian_blur(maps, sigma, padding=padding)
    assert got.shape == maps.shape
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_border_rules_differ_only_near_the_border():
    maps = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(2))
    reflect, replicate = gaussian_blur(maps, 2.0), gaussian_blur(maps, 2.0, padding="replicate")
    radius = len(gaussian_kernel(2.0)) // 2
    inner = (slice(None), slice(None), slice(radius, -radius), slice(radius, -radius))
    assert torch.allclose(reflect[inner], replicate[inner], atol=1e-6)
    assert not torch.allclose(reflect, replicate, atol=1e-3)


def test_blur_keeps_constants_and_zero_sigma_is_the_identity():
    flat = torch.full((1, 1, 12, 9), 0.25)
    for padding in ("reflect", "replicate"):
        assert torch.allclose(gaussian_blur(flat, 1.5, padding=padding), flat, atol=1e-7)
    maps = torch.rand(1, 1, 8, 8)
    assert gaussian_blur(maps, 0.0) is maps and gaussian_blur(maps, -1.0) is maps


@pytest.mark.parametrize("grid, size, sigma", [((32, 32), (256, 256), 4.0), ((8, 6), (64, 48), 1.0), ((5, 5), (40, 40), 0.0)])
def test_separable_smoothing_equals_interpolate_then_blur(grid, size, sigma):
    maps = torch.rand(3, *grid, generator=torch.Generator().manual_seed(4))
    want = gaussian_blur(F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False), sigma)[:, 0]
    got = upsample_and_smooth(maps, size, sigma)
    assert got.shape == (3, *size)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("grid, size, shrink_to, sigma", [((32, 32), (256, 256), (64, 64), 4.0), ((8, 6), (64, 48), (16, 24), 1.0),
                                                     ((5, 7), (40, 42), (15, 12), 2.0)])
def test_smoothing_shrunk_to_a_grid_equals_the_full_maps_area_resized(grid, size, shrink_to, sigma):
    # powers of two (area_resize's strided sums) and other factors (torch's adaptive pooling)
    maps = torch.rand(3, *grid, generator=torch.Generator().manual_seed(5))
    want = area_resize(upsample_and_smooth(maps, size, sigma)[:, None], shrink_to)[:, 0]
    got = upsample_and_smooth(maps, size, sigma, shrink_to=shrink_to)
    assert got.shape == (3, *shrink_to)
    assert torch.allclose(got, want, atol=1e-6)


def test_smoothing_matrix_keeps_mass_even_when_the_kernel_is_wider_than_the_map():
    # radius 9 on 6 output pixels: the reflection wraps more than once, where F.pad would refuse.
    matrix = smoothing_matrix(4, 6, 3.0)
    assert matrix.shape == (6, 4)
    assert torch.allclose(matrix.sum(1), torch.ones(6), atol=1e-6)
    constant = torch.full((1, 4, 4), 2.0)
    assert torch.allclose(upsample_and_smooth(constant, (6, 6), 3.0), torch.full((1, 6, 6), 2.0), atol=1e-5)


def test_grey_is_the_luminance_and_sigma_scales_with_the_image():
    images = torch.zeros(3, 3, 2, 2)
    images[0, 0] = 1.0  # pure red
    images[1] = 0.5  # grey stays grey
    images[2, 2] = 1.0  # pure blue
    out = grey(images)
    assert out.shape == (3, 1, 2, 2)
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([0.299, 0.5, 0.114]))
    assert scaled_sigma(4.0, 256) == 4.0 and scaled_sigma(4.0, 128) == 2.0


@pytest.mark.parametrize(
    "shape, size",
    [
        ((8, 3, 256, 256), (128, 128)),  # the loss profile's images
        ((2, 1, 256, 256), (64, 64)),  # NBS's prior on the predictor grid
        ((2, 1, 256, 192), (64, 48)),
        ((2, 4, 128, 64), (32, 32)),  # factors differing by axis
        ((2, 3, 90, 90), (30, 30)),  # not a power of two: torch's own kernel
        ((1, 2, 100, 100), (64, 64)),  # not a whole factor: torch's own kernel
        ((2, 3, 64, 64), (64, 64)),
    ],
)
def test_area_resize_gives_torchs_area_values_bit_for_bit(shape, size):
    maps = torch.rand(shape, generator=torch.Generator().manual_seed(3)) * 4 - 1
    expected = F.interpolate(maps, size=size, mode="area")
    assert torch.equal(area_resize(maps, size), expected)
    channels_last = maps.contiguous(memory_format=torch.channels_last)
    assert torch.equal(area_resize(channels_last, size), expected)
