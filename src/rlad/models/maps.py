"""Per-pixel map operations every model shares: the grey image, the area resize, the Gaussian kernel,
blurring a map, and upsampling a patch-grid map to the image while smoothing it.

One kernel serves every caller (radius round(3 sigma), at least 1; normalised to sum 1), so a
`blur_sigma` means the same smoothing in every model. Callers differ only in the border rule:
"reflect" (the edge pixel is not repeated) for anomaly maps, "replicate" for the NBS sampler's
structure map.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B


def grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luminance."""
    weights = torch.tensor(LUMINANCE, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def area_resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.interpolate(maps, size, mode="area")`, the same values. Shrinking by powers of two (the
    profile's 256 -> 128 px, the prior's 256 -> 64) it sums the strided slices of each window in the
    order torch's pooling does, row by row, several times faster on CPU than the adaptive pooling
    kernel (5x for 256 -> 128 px images); tests/models/test_maps.py checks the values bit for bit."""
    height, width = maps.shape[-2:]
    out_h, out_w = size
    if (height, width) == (out_h, out_w):
        return maps
    step_h, step_w = height // out_h, width // out_w
    whole = height == step_h * out_h and width == step_w * out_w
    if not whole or step_h & (step_h - 1) or step_w & (step_w - 1):  # other factors round differently
        return F.interpolate(maps, size=(out_h, out_w), mode="area")
    total = maps[..., 0::step_h, 0::step_w].clone()
    for row in range(step_h):
        for col in range(step_w):
            if row or col:
                total += maps[..., row::step_h, col::step_w]
    return total.div_(step_h * step_w)


def gaussian_kernel(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1-D Gaussian of `sigma` pixels over -r..r, r = max(1, round(3 sigma)), summing to 1."""
    radius = max(1, int(round(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float, padding: str = "reflect") -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W) maps, same size out (`padding`: reflect | replicate);
    sigma <= 0 returns the maps unchanged."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma, maps.dtype)
    radius = len(kernel) // 2
    rows = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode=padding), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode=padding), kernel.view(1, 1, -1, 1))


def _reflect(index: int, n: int) -> int:
    """torch's 'reflect' padding (edge not repeated), applied until the index lands inside [0, n)."""
    while index < 0 or index >= n:
        index = -index if index < 0 else 2 * (n - 1) - index
    return index


@functools.lru_cache(maxsize=16)
def smoothing_matrix(n_in: int, n_out: int, sigma: float) -> torch.Tensor:
    """(n_out, n_in): bilinear upsampling (align_corners=False) then `gaussian_blur` with reflect
    padding, as one matrix for one axis.

    Both steps are linear and separable, so a whole (h, w) map becomes A_h @ map @ A_w^T: two small
    matrix products instead of a full-resolution convolution (about 10x cheaper at 256 px on CPU).
    The reflection is repeated when the kernel is wider than the map, where `F.pad` would refuse.
    """
    upsample = F.interpolate(torch.eye(n_in).unsqueeze(0), size=n_out, mode="linear", align_corners=False)[0].t()
    if sigma <= 0 or n_out < 2:
        return upsample.contiguous()
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    blur = torch.zeros(n_out, n_out)
    for i in range(n_out):
        for offset, weight in zip(range(-radius, radius + 1), kernel.tolist()):
            blur[i, _reflect(i + offset, n_out)] += weight
    return (blur @ upsample).contiguous()


@functools.lru_cache(maxsize=16)
def shrunk_smoothing_matrix(n_in: int, n_full: int, sigma: float, n_out: int) -> torch.Tensor:
    """(n_out, n_in): `smoothing_matrix(n_in, n_full, sigma)`, then the area resize of its n_full
    pixels to n_out (`area_resize`, also linear and separable)."""
    return area_resize(smoothing_matrix(n_in, n_full, sigma)[None, None], (n_out, n_in))[0, 0].contiguous()


def smoothing_matrices(grid_hw: tuple[int, int], size: tuple[int, int], sigma: float,
                       shrink_to: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (rows, cols) matrices of `upsample_and_smooth`: A_h (H, h) and A_w (W, w), or with
    `shrink_to` the same followed by the area resize to it."""
    if shrink_to is None:
        return tuple(smoothing_matrix(n, full, float(sigma)) for n, full in zip(grid_hw, size))
    return tuple(shrunk_smoothing_matrix(n, full, float(sigma), out) for n, full, out in zip(grid_hw, size, shrink_to))


def upsample_and_smooth(grid_maps: torch.Tensor, size: tuple[int, int], sigma: float,
                        shrink_to: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, h, w) patch-grid maps -> (B, H, W): bilinear upsampling, then a Gaussian blur of `sigma`
    pixels (reflect padding). With `shrink_to`, those maps area-resized to it (`area_resize`), the
    same maths without building them: NBS's prior needs PatchCore's map on its own coarser grid."""
    rows, cols = smoothing_matrices(tuple(grid_maps.shape[-2:]), size, sigma, shrink_to)
    return torch.matmul(torch.matmul(rows, grid_maps.float()), cols.t())


def scaled_sigma(sigma_at_256: float, size: int) -> float:
    """A smoothing width given in pixels of a 256 px image, at `size` px."""
    return sigma_at_256 * size / 256.0
