"""The catalogue of synthetic defects: scratch, crack, hole, stain, perlin and patch (`add_defect`).

Images are float (H, W, 3) arrays in [0, 1]; masks are bool (H, W).

Mask convention (what "exact" means here). Every drawn defect (all kinds except ``patch``) is a
region R blended in with a coverage map that is >= 0.75 on R and <= 0.25 elsewhere, so the mask,
``coverage >= 0.5``, is exactly R. The only changed pixels outside the mask are the anti-aliasing
fringe: the 8-neighbours of R, blended with coverage <= 0.25. Every masked pixel changes by at least
`MIN_CHANGE` in some channel (enforced, so a masked pixel is never an unchanged one, even for the
subtle defects). ``patch`` (Poisson blending, `rlad.data.synth.blend.paste_defect`) changes only
masked pixels: it has no fringe.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from rlad.data.synth.blend import paste_defect, resize_linear
from rlad.data.synth.noise import largest_component, perlin_mask, perlin_noise

DEFECT_KINDS: tuple[str, ...] = ("scratch", "crack", "hole", "stain", "perlin", "patch")

# Smallest per-pixel change (max over channels) of any masked pixel: 4 grey levels survives uint8 saving.
MIN_CHANGE = 4.0 / 255.0


def _coverage_from_region(region: np.ndarray, ramp: float = 2.0) -> np.ndarray:
    """An anti-aliased alpha for a hard region: >= 0.75 inside, <= 0.25 on its 8-neighbours, 0 beyond.

    Signed distance measured between pixel centres and the region's edge (half a pixel out)."""
    inside = ndi.distance_transform_edt(region)
    outside = ndi.distance_transform_edt(~region)
    signed = np.where(region, 0.5 - inside, outside - 0.5)
    return np.clip(0.5 - signed / ramp, 0.0, 1.0)


def _blend_region(image: np.ndarray, altered: np.ndarray, region: np.ndarray) -> np.ndarray:
    coverage = _coverage_from_region(region)[:, :, None]
    return image + coverage * (altered - image)


def _enforce_min_change(image: np.ndarray, out: np.ndarray, mask: np.ndarray, min_change: float) -> np.ndarray:
    """Push masked pixels that barely changed by `min_change` (keeping the defect's direction)."""
    diff = out - image
    weak = mask & (np.abs(diff).max(axis=2) < min_change)
    if not weak.any():
        return out
    base = image[weak]
    direction = np.sign(diff[weak].mean(axis=1))
    direction[direction == 0] = -1.0
    # Flip where the push would clip to no change at all.
    direction = np.where((direction < 0) & (base.min(axis=1) < min_change), 1.0, direction)
    direction = np.where((direction > 0) & (base.max(axis=1) > 1.0 - min_change), -1.0, direction)
    out = out.copy()
    out[weak] = np.clip(base + direction[:, None] * min_change, 0.0, 1.0)
    return out


def _distance_to_polyline(shape: tuple[int, int], points: np.ndarray, reach: float = np.inf) -> np.ndarray:
    """Euclidean distance from every pixel centre to a polyline given as (N, 2) (row, col) points.

    Only pixels within `reach` of a segment's bounding box are measured (the rest stay at inf)."""
    best = np.full(shape, np.inf)
    for (r0, c0), (r1, c1) in zip(points[:-1], points[1:]):
        top = max(0, int(math.floor(min(r0, r1) - reach))) if np.isfinite(reach) else 0
        bottom = min(shape[0], int(math.ceil(max(r0, r1) + reach)) + 1) if np.isfinite(reach) else shape[0]
        left = max(0, int(math.floor(min(c0, c1) - reach))) if np.isfinite(reach) else 0
        right = min(shape[1], int(math.ceil(max(c0, c1) + reach)) + 1) if np.isfinite(reach) else shape[1]
        if top >= bottom or left >= right:
            continue
        rows = np.arange(top, bottom, dtype=np.float64)[:, None]
        cols = np.arange(left, right, dtype=np.float64)[None, :]
        dr, dc = r1 - r0, c1 - c0
        length_sq = dr * dr + dc * dc
        if length_sq == 0:
            t = np.zeros((bottom - top, right - left))
        else:
            t = np.clip(((rows - r0) * dr + (cols - c0) * dc) / length_sq, 0.0, 1.0)
        dist = np.hypot(rows - (r0 + t * dr), cols - (c0 + t * dc))
        window = best[top:bottom, left:right]
        np.minimum(window, dist, out=window)
    return best


def _stroke_region(shape: tuple[int, int], points: np.ndarray, width: float) -> np.ndarray:
    region = _distance_to_polyline(shape, points, reach=width / 2.0 + 1.0) <= width / 2.0
    if not region.any():  # a stroke entirely off the image: keep its nearest in-image pixel
        r, c = np.clip(np.round(points[0]).astype(int), 0, np.array(shape) - 1)
        region[r, c] = True
    return region


def _irregular_blob(
    shape: tuple[int, int],
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    roughness: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """An ellipse whose edge wobbles with Perlin noise; one 8-connected blob containing the centre."""
    rows = np.arange(shape[0])[:, None] - center[0]
    cols = np.arange(shape[1])[None, :] - center[1]
    cos, sin = math.cos(angle), math.sin(angle)
    u = (cols * cos + rows * sin) / radii[1]
    v = (-cols * sin + rows * cos) / radii[0]
    radius = np.sqrt(u * u + v * v)
    wobble = perlin_noise(shape, max(2, int(max(radii) * 0.8)), rng)
    region = largest_component(radius <= 1.0 + roughness * wobble)
    centre = (int(np.clip(round(center[0]), 0, shape[0] - 1)), int(np.clip(round(center[1]), 0, shape[1] - 1)))
    if not region.any():
        region[centre] = True
    return region


def _random_centre(rng: np.random.Generator, shape: tuple[int, int], margin: float) -> tuple[float, float]:
    return (
        rng.uniform(margin * shape[0], (1 - margin) * shape[0]),
        rng.uniform(margin * shape[1], (1 - margin) * shape[1]),
    )


def _defect_scratch(image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None):
    shape = image.shape[:2]
    side = min(shape)
    length = rng.uniform(0.25, 0.7) * side
    angle = rng.uniform(0, math.pi)
    centre = np.array(_random_centre(rng, shape, 0.2))
    direction = np.array([math.sin(angle), math.cos(angle)])
    normal = np.array([-direction[1], direction[0]])
    bend = rng.uniform(-0.15, 0.15) * length
    t = np.linspace(-0.5, 0.5, 24)[:, None]
    # A gently bent line: a parabola offset along the normal.
    points = centre + t * length * direction + (1 - 4 * t * t) * bend * normal
    width = rng.uniform(1.5, 1.5 + 1.5 * side / 256)
    region = _stroke_region(shape, points, width)
    polarity = 1.0 if rng.random() < 0.7 else -1.0
    contrast = rng.uniform(0.08, 0.4)
    along = 0.65 + 0.35 * perlin_noise(shape, max(2, int(length / 3)), rng)[:, :, None]
    altered = np.clip(image + polarity * contrast * along, 0.0, 1.0)
    return _blend_region(image, altered, region), region


def _crack_walk(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, step: float):
    points = [start]
    heading_now = heading
    for _ in range(max(2, int(length / step))):
        heading_now += rng.normal(0.0, 0.35)
        points.append(points[-1] + step * np.array([math.sin(heading_now), math.cos(heading_now)]))
    return np.array(points)


def _defect_crack(image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None):
    shape = image.shape[:2]
    side = min(shape)
    step = max(1.5, side / 64)
    main = _crack_walk(rng, np.array(_random_centre(rng, shape, 0.25)), rng.uniform(0, 2 * math.pi),
                       rng.uniform(0.2, 0.5) * side, step)
    region = _stroke_region(shape, main, rng.uniform(1.5, 1.5 + side / 256))
    for _ in range(int(rng.integers(0, 3))):
        fork = main[int(rng.integers(1, len(main)))]
        branch = _crack_walk(rng, fork, rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.2) * side, step)
        region |= _stroke_region(shape, branch, 1.5)
    darkness = rng.uniform(0.3, 0.75)
    altered = image * (1.0 - darkness)
    return _blend_region(image, altered, region), region


def _defect_hole(image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None):
    shape = image.shape[:2]
    side = min(shape)
    radius = max(2.0, rng.uniform(0.025, 0.08) * side)
    radii = (radius, radius * rng.uniform(0.6, 1.0))
    centre = _random_centre(rng, shape, 0.1)
    region = _irregular_blob(shape, centre, radii, rng.uniform(0, math.pi), 0.25, rng)
    rows = np.arange(shape[0])[:, None] - centre[0]
    cols = np.arange(shape[1])[None, :] - centre[1]
    depth = np.clip(1.0 - np.hypot(rows, cols) / (1.3 * max(radii)), 0.0, 1.0)[:, :, None]
    floor = rng.uniform(0.1, 0.5)  # how much of the texture still shows at the rim
    altered = image * (floor * (1.0 - 0.6 * depth)) + 0.02
    return _blend_region(image, np.clip(altered, 0.0, 1.0), region), region


_STAIN_COLOURS = np.array(
    [[0.55, 0.38, 0.2], [0.35, 0.3, 0.25], [0.7, 0.62, 0.3], [0.3, 0.35, 0.5], [0.9, 0.85, 0.75]]
)


def _defect_stain(image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None):
    shape = image.shape[:2]
    side = min(shape)
    radius = max(3.0, rng.uniform(0.06, 0.16) * side)
    radii = (radius, radius * rng.uniform(0.5, 1.0))
    region = _irregular_blob(shape, _random_centre(rng, shape, 0.15), radii, rng.uniform(0, math.pi), 0.4, rng)
    colour = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
    opacity = rng.uniform(0.15, 0.5) * (0.75 + 0.25 * perlin_noise(shape, max(2, int(radius)), rng))
    # Multiply-then-mix: the texture shows through, like liquid soaked into the surface.
    stained = image * colour * 1.3
    altered = image + opacity[:, :, None] * (stained - image)
    return _blend_region(image, np.clip(altered, 0.0, 1.0), region), region


def _defect_perlin(image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None):
    shape = image.shape[:2]
    region = perlin_mask(shape, rng, min_area_fraction=0.01, max_area_fraction=0.06, single_component=True)
    foreign = source if source is not None else np.rot90(image, int(rng.integers(1, 4)))
    if foreign.shape != image.shape:
        foreign = resize_linear(foreign, shape)
    mean = foreign.mean()
    gain, shift = rng.uniform(0.5, 1.8), rng.uniform(-0.25, 0.25)
    foreign = np.clip(mean + gain * (foreign - mean) + shift, 0.0, 1.0)
    beta = rng.uniform(0.35, 0.85)  # DRAEM-style partial transparency of the foreign texture
    altered = (1.0 - beta) * image + beta * foreign
    return _blend_region(image, altered, region), region


def _defect_patch(image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None):
    shape = image.shape[:2]
    side = min(shape)
    if source is None or rng.random() < 0.5:
        # The same texture, turned and zoomed: only the structure breaks, not the colour (subtle).
        zoom = rng.uniform(1.2, 1.8)
        crop = max(8, int(round(side / zoom)))
        r0, c0 = int(rng.integers(0, shape[0] - crop + 1)), int(rng.integers(0, shape[1] - crop + 1))
        donor = resize_linear(np.rot90(image[r0 : r0 + crop, c0 : c0 + crop], int(rng.integers(1, 4))), shape)
    else:
        donor = source if source.shape == image.shape else resize_linear(source, shape)
    radius = max(3.0, rng.uniform(0.06, 0.14) * side)
    radii = (radius, radius * rng.uniform(0.5, 1.0))
    donor_mask = _irregular_blob(shape, _random_centre(rng, shape, 0.2), radii, rng.uniform(0, math.pi), 0.3, rng)
    return paste_defect(image, donor, donor_mask, rng, scale_range=(0.8, 1.25))


_DEFECT_MAKERS: dict[str, Callable] = {
    "scratch": _defect_scratch,
    "crack": _defect_crack,
    "hole": _defect_hole,
    "stain": _defect_stain,
    "perlin": _defect_perlin,
    "patch": _defect_patch,
}


def add_defect(
    image: np.ndarray, kind: str, rng: np.random.Generator, source: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic defect of `kind` (one of `DEFECT_KINDS`) on a float (H, W, 3) image in [0, 1].

    Sizes scale with the image; contrast, size and orientation are drawn so that some defects are
    subtle. `source` (optional, same shape) is a foreign texture for "perlin" and "patch"; without it
    they use a turned/zoomed copy of `image`. Returns (float32 image, bool mask), the mask non-empty
    and exact in the sense of the module docstring.
    """
    if kind not in _DEFECT_MAKERS:
        raise ValueError(f"add_defect: unknown kind {kind!r}; choose one of {', '.join(DEFECT_KINDS)}")
    base = np.asarray(image, dtype=np.float64)
    if base.ndim != 3 or base.shape[2] != 3:
        raise ValueError(f"add_defect: expected an (H, W, 3) image, got shape {base.shape}")
    foreign = None if source is None else np.asarray(source, dtype=np.float64)
    out, mask = _DEFECT_MAKERS[kind](base, rng, foreign)
    out = _enforce_min_change(base, np.clip(out, 0.0, 1.0), mask, MIN_CHANGE)
    return out.astype(np.float32), mask
