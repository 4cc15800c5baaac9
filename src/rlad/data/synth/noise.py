"""Perlin (gradient) noise, DRAEM-style Perlin masks, and the largest connected component of a mask."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _perlin_octave(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    # A random sub-cell phase keeps the lattice from lining up with pixel (0, 0) in every sample.
    phase_y, phase_x = rng.uniform(0.0, 1.0, size=2)
    ys = (np.arange(h) + 0.5) / cell + phase_y
    xs = (np.arange(w) + 0.5) / cell + phase_x
    grid_h, grid_w = int(math.floor(ys[-1])) + 2, int(math.floor(xs[-1])) + 2
    angles = rng.uniform(0.0, 2.0 * math.pi, size=(grid_h, grid_w))
    gy, gx = np.sin(angles), np.cos(angles)

    y0 = np.floor(ys).astype(int)[:, None]
    x0 = np.floor(xs).astype(int)[None, :]
    fy = (ys[:, None] - y0).astype(np.float64)
    fx = (xs[None, :] - x0).astype(np.float64)

    def corner(dy: int, dx: int) -> np.ndarray:
        return gy[y0 + dy, x0 + dx] * (fy - dy) + gx[y0 + dy, x0 + dx] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
    bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
    # 2-D gradient noise with unit gradients is bounded by sqrt(2)/2; rescale to [-1, 1].
    return (top * (1 - uy) + bottom * uy) * math.sqrt(2.0)


def perlin_noise(
    shape: tuple[int, int], scale: int, rng: np.random.Generator, octaves: int = 1
) -> np.ndarray:
    """Gradient (Perlin) noise of `shape`, float64 in [-1, 1].

    `scale` is the lattice cell size in pixels: larger scale, larger blobs. With `octaves` > 1, finer
    octaves (half the cell, half the amplitude each) are added and the sum renormalised to [-1, 1].
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"perlin_noise: shape must be positive, got {shape}")
    if scale < 1:
        raise ValueError(f"perlin_noise: scale (cell size in pixels) must be >= 1, got {scale}")
    if octaves < 1:
        raise ValueError(f"perlin_noise: octaves must be >= 1, got {octaves}")
    total = np.zeros((h, w))
    amplitude_sum = 0.0
    for octave in range(octaves):
        amplitude = 0.5**octave
        total += amplitude * _perlin_octave((h, w), max(1.0, scale / 2**octave), rng)
        amplitude_sum += amplitude
    return np.clip(total / amplitude_sum, -1.0, 1.0)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (empty stays empty; ties: the first label)."""
    labels, count = ndi.label(mask, structure=np.ones((3, 3), bool))
    if count <= 1:
        return mask.astype(bool).copy()
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    threshold: float = 0.35,
    min_area_fraction: float = 0.005,
    max_area_fraction: float = 0.25,
    scale: int | None = None,
    single_component: bool = False,
) -> np.ndarray:
    """A non-empty bool mask: Perlin noise above `threshold` (DRAEM-style anomaly shapes).

    The cell size is drawn between 1/8 and 1/2 of the shorter side unless `scale` is given. When the
    area at `threshold` falls outside [min_area_fraction, max_area_fraction], the threshold is moved
    (bisection) to reach an area drawn uniformly in that range instead; with `single_component`, only
    the largest 8-connected blob is kept and it is that blob's area that is brought into range. The
    result is never empty; its area is in range except in the rare case where blobs merging makes the
    area jump over the whole range (then the nearest non-empty level set is returned).
    """
    h, w = int(shape[0]), int(shape[1])
    if not 0.0 <= min_area_fraction <= max_area_fraction <= 1.0 or max_area_fraction <= 0.0:
        raise ValueError(
            "perlin_mask: need 0 <= min_area_fraction <= max_area_fraction <= 1 and max_area_fraction > 0,"
            f" got {min_area_fraction}, {max_area_fraction}"
        )
    if scale is None:
        scale = max(2, int(round(min(h, w) * 2.0 ** rng.uniform(-3.0, -1.0))))
    noise = perlin_noise((h, w), scale, rng)
    n_pixels = h * w

    def level_set(level: float) -> np.ndarray:
        above = noise > level
        return largest_component(above) if single_component else above

    mask = level_set(threshold)
    area = mask.sum() / n_pixels
    if mask.any() and min_area_fraction <= area <= max_area_fraction:
        return mask

    target = max(rng.uniform(min_area_fraction, max_area_fraction), 1.0 / n_pixels)
    low, high = float(noise.min()) - 1e-9, float(noise.max())  # low: everything, high: nothing
    for _ in range(40):
        mid = 0.5 * (low + high)
        if level_set(mid).sum() / n_pixels >= target:
            low = mid
        else:
            high = mid
    mask_low, mask_high = level_set(low), level_set(high)
    area_high = mask_high.sum() / n_pixels
    if mask_high.any() and min_area_fraction <= area_high <= max_area_fraction:
        return mask_high
    return mask_low  # non-empty: its area is >= target > 0
