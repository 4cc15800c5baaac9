"""Synthetic defects and the embedded demo dataset (`rlad data demo`).

Two jobs share this module:

* **Building blocks** for synthetic anomalies, reused by the pair builder (METHODS.md section 1,
  "Synthetic pairs"): Perlin noise and Perlin masks, Poisson (gradient-domain) blending, cut-and-paste
  of a real defect onto a normal image, and a family of hand-made defects (`add_defect`).
* **The demo dataset**: tiles cut from the CC0 textures that scikit-image ships offline (brick, grass,
  gravel), tinted slightly per category so that RGB handling is exercised, with synthetic defects and
  exact masks, written in MVTec AD layout.

Images are float32 arrays (H, W, 3) in [0, 1] throughout; masks are bool (H, W).

Mask convention (what "exact" means here). Every drawn defect (all kinds except ``patch``) is a
region R blended in with a coverage map that is >= 0.75 on R and <= 0.25 elsewhere, so the mask,
``coverage >= 0.5``, is exactly R. The only changed pixels outside the mask are the anti-aliasing
fringe: the 8-neighbours of R, blended with coverage <= 0.25. Every masked pixel changes by at least
`MIN_CHANGE` in some channel (enforced, so a masked pixel is never an unchanged one, even for the
subtle defects). ``patch`` (Poisson blending) changes only masked pixels: it has no fringe.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from rlad.errors import DataError, RladError

DEFECT_KINDS: tuple[str, ...] = ("scratch", "crack", "hole", "stain", "perlin", "patch")

# Smallest per-pixel change (max over channels) of any masked pixel: 4 grey levels survives uint8 saving.
MIN_CHANGE = 4.0 / 255.0

README_MARKER = "<!-- rlad-demo-dataset: written by `rlad data demo`; regenerating it rewrites this folder -->"


# --------------------------------------------------------------------------------------------------
# Perlin noise and masks
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Poisson blending and cut-paste
# --------------------------------------------------------------------------------------------------

_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _as_hwc(image: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected an (H, W) or (H, W, C) image, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


def seamless_blend(
    target: np.ndarray, source: np.ndarray, mask: np.ndarray, offset: tuple[int, int]
) -> np.ndarray:
    """Poisson (gradient-domain) blending of `source[mask]` into `target`.

    `offset` = (row, col) of the source's top-left pixel in target coordinates; the source may hang
    over the target's edges, but every masked pixel must land inside the target. Inside the mask the
    result has the source's gradients (4-neighbour Laplacian); the boundary condition is the target
    on the 1-px ring around the mask. Where a masked pixel's neighbour lies outside the source, the
    source is edge-extended (zero guidance gradient there). Pixels outside the mask are returned
    unchanged (bit-for-bit); the result is clipped to [0, 1] and has the target's dtype and shape.
    Accepts (H, W) or (H, W, C) float images with the same channel count.
    """
    target_arr = np.asarray(target)
    tgt = _as_hwc(target_arr, "seamless_blend target")
    src = _as_hwc(source, "seamless_blend source")
    mask = np.asarray(mask, bool)
    if src.shape[2] != tgt.shape[2]:
        raise ValueError(f"seamless_blend: source has {src.shape[2]} channels, target {tgt.shape[2]}")
    if mask.shape != src.shape[:2]:
        raise ValueError(f"seamless_blend: mask shape {mask.shape} != source shape {src.shape[:2]}")
    result = tgt.copy()
    if not mask.any():
        return result.astype(target_arr.dtype).reshape(target_arr.shape)

    height, width = tgt.shape[:2]
    src_h, src_w = mask.shape
    row0, col0 = int(offset[0]), int(offset[1])
    ys, xs = np.nonzero(mask)
    ty, tx = ys + row0, xs + col0
    if ty.min() < 0 or tx.min() < 0 or ty.max() >= height or tx.max() >= width:
        raise ValueError(
            f"seamless_blend: masked pixels fall outside the target ({height}x{width}) at offset {offset}"
        )

    n = ys.size
    index = np.full((src_h, src_w), -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, tgt.shape[2]))
    off_rows: list[np.ndarray] = []
    off_cols: list[np.ndarray] = []
    has_boundary = np.zeros(n, bool)
    for dy, dx in _NEIGHBOURS:
        nty, ntx = ty + dy, tx + dx
        in_target = (nty >= 0) & (nty < height) & (ntx >= 0) & (ntx < width)
        diagonal += in_target
        ny, nx = ys + dy, xs + dx
        in_source = (ny >= 0) & (ny < src_h) & (nx >= 0) & (nx < src_w)
        neighbour_index = np.full(n, -1)
        neighbour_index[in_source] = index[ny[in_source], nx[in_source]]
        unknown = in_target & (neighbour_index >= 0)
        known = in_target & (neighbour_index < 0)
        off_rows.append(np.nonzero(unknown)[0])
        off_cols.append(neighbour_index[unknown])
        rhs[known] += tgt[nty[known], ntx[known]]
        has_boundary |= known
        # Guidance field: the source gradient toward that neighbour (edge-extended source).
        cy, cx = np.clip(ny, 0, src_h - 1), np.clip(nx, 0, src_w - 1)
        guidance = src[ys, xs] - src[cy, cx]
        rhs[in_target] += guidance[in_target]

    rows = np.concatenate(off_rows)
    cols = np.concatenate(off_cols)
    # A 4-connected part of the mask with no target pixel around it (the mask covers the whole target)
    # has only Neumann conditions; a tiny pull toward the target fixes its free constant.
    labels, count = ndi.label(mask)
    anchored = np.zeros(count + 1, bool)
    anchored[labels[ys[has_boundary], xs[has_boundary]]] = True
    free = ~anchored[labels[ys, xs]]
    regulariser = np.where(free, 1e-8, 0.0)
    rhs += regulariser[:, None] * tgt[ty, tx]
    matrix = sparse.csc_matrix(
        (
            np.concatenate([diagonal + regulariser, -np.ones(rows.size)]),
            (np.concatenate([np.arange(n), rows]), np.concatenate([np.arange(n), cols])),
        ),
        shape=(n, n),
    )
    solved = sparse_linalg.splu(matrix).solve(rhs)
    result[ty, tx] = np.clip(solved, 0.0, 1.0)
    return result.astype(target_arr.dtype).reshape(target_arr.shape)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    anti_alias = size[0] < image.shape[0] or size[1] < image.shape[1]
    return resize(image, size, order=1, mode="edge", anti_aliasing=anti_alias, preserve_range=True)


def paste_defect(
    normal: np.ndarray,
    defect_image: np.ndarray,
    defect_mask: np.ndarray,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.6, 1.4),
    blend: str = "seamless",
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the largest defect component out of `defect_image` and paste it onto `normal`.

    The component's bounding box (plus a few pixels of context, which the Poisson solve uses as
    guidance gradients at the mask's edge) is rescaled by a factor drawn from `scale_range` (reduced
    only when the defect would not fit inside `normal`), then blended at a uniformly drawn position
    where the whole pasted mask lies inside `normal`. `blend` is "seamless" (Poisson) or "copy" (hard
    paste). Returns (new image, bool mask of the pasted pixels); nothing outside that mask changes.
    """
    if blend not in ("seamless", "copy"):
        raise ValueError(f"paste_defect: blend must be 'seamless' or 'copy', got {blend!r}")
    low_scale, high_scale = scale_range
    if not 0 < low_scale <= high_scale:
        raise ValueError(f"paste_defect: scale_range must satisfy 0 < low <= high, got {scale_range}")
    normal_arr = np.asarray(normal)
    defect_mask = np.asarray(defect_mask, bool)
    if defect_mask.shape != np.asarray(defect_image).shape[:2]:
        raise ValueError(
            f"paste_defect: mask shape {defect_mask.shape} != defect image shape {np.asarray(defect_image).shape[:2]}"
        )
    component = largest_component(defect_mask)
    if not component.any():
        raise DataError("paste_defect: the defect mask has no foreground pixel")

    ys, xs = np.nonzero(component)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    height, width = normal_arr.shape[:2]
    box_h, box_w = bottom - top, right - left
    scale = rng.uniform(low_scale, high_scale)
    scale = min(scale, height / box_h, width / box_w)

    margin = 3
    crop_top, crop_left = max(0, top - margin), max(0, left - margin)
    crop_bottom = min(defect_mask.shape[0], bottom + margin)
    crop_right = min(defect_mask.shape[1], right + margin)
    crop_image = _as_hwc(defect_image, "paste_defect defect_image")[crop_top:crop_bottom, crop_left:crop_right]
    crop_mask = component[crop_top:crop_bottom, crop_left:crop_right].astype(np.float64)
    new_size = (max(1, round(crop_mask.shape[0] * scale)), max(1, round(crop_mask.shape[1] * scale)))
    patch = _resize(crop_image, new_size)
    # The mask is resized like an alpha map and thresholded at 0.5 (same convention as add_defect).
    patch_alpha = _resize(crop_mask, new_size)
    patch_mask = largest_component(patch_alpha >= 0.5)
    if not patch_mask.any():
        patch_mask = np.zeros(new_size, bool)
        patch_mask[np.unravel_index(int(np.argmax(patch_alpha)), new_size)] = True
    mys, mxs = np.nonzero(patch_mask)
    m_top, m_left = mys.min(), mxs.min()
    m_h, m_w = mys.max() + 1 - m_top, mxs.max() + 1 - m_left
    if m_h > height or m_w > width:  # rounding can overshoot by a pixel: trim
        patch_mask[m_top + height :, :] = False
        patch_mask[:, m_left + width :] = False
        m_h, m_w = min(m_h, height), min(m_w, width)
    dest_top = int(rng.integers(0, height - m_h + 1))
    dest_left = int(rng.integers(0, width - m_w + 1))
    offset = (dest_top - m_top, dest_left - m_left)

    if blend == "seamless":
        pasted = seamless_blend(normal_arr, patch, patch_mask, offset)
    else:
        pasted = normal_arr.copy()
        target_view = _as_hwc(pasted, "normal")
        pys, pxs = np.nonzero(patch_mask)
        target_view[pys + offset[0], pxs + offset[1]] = np.clip(patch[pys, pxs], 0.0, 1.0)
        pasted = target_view.astype(normal_arr.dtype).reshape(normal_arr.shape)
    out_mask = np.zeros((height, width), bool)
    pys, pxs = np.nonzero(patch_mask)
    out_mask[pys + offset[0], pxs + offset[1]] = True
    return pasted, out_mask


# --------------------------------------------------------------------------------------------------
# Hand-made defects
# --------------------------------------------------------------------------------------------------


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
        foreign = _resize(foreign, shape)
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
        donor = _resize(np.rot90(image[r0 : r0 + crop, c0 : c0 + crop], int(rng.integers(1, 4))), shape)
    else:
        donor = source if source.shape == image.shape else _resize(source, shape)
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


# --------------------------------------------------------------------------------------------------
# Textures and the demo dataset
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Texture:
    name: str
    tint: tuple[float, float, float]  # slight per-category colour so RGB handling is exercised
    licence: str


TEXTURES: dict[str, Texture] = {
    "brick": Texture(
        "brick", (1.0, 0.86, 0.76),
        "scikit-image `skimage.data.brick()`: Bricks25 from CC0Textures, CC0 1.0",
    ),
    "grass": Texture(
        "grass", (0.84, 1.0, 0.78),
        "scikit-image `skimage.data.grass()`: 'Grass 01' by linolafett (DeviantArt), CC0 1.0",
    ),
    "gravel": Texture(
        "gravel", (0.98, 0.95, 0.9),
        "scikit-image `skimage.data.gravel()`: Gravel04 from CC0Textures, CC0 1.0",
    ),
}

_TEXTURE_CACHE: dict[str, np.ndarray] = {}


def load_texture(name: str) -> np.ndarray:
    """One of the CC0 textures shipped with scikit-image, as float64 (512, 512) grey in [0, 1]."""
    if name not in TEXTURES:
        raise RladError(f"unknown demo category {name!r}; choose from {', '.join(TEXTURES)}")
    if name not in _TEXTURE_CACHE:
        import skimage.data

        grey = np.asarray(getattr(skimage.data, name)(), dtype=np.float64) / 255.0
        grey.setflags(write=False)
        _TEXTURE_CACHE[name] = grey
    return _TEXTURE_CACHE[name]


def texture_tile(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random tile of texture `name`: crop at a random position and scale (40-65 % of the texture
    side), random flip and 90-degree turn, resized to `size`, slight brightness/contrast jitter, tinted.
    Float32 (size, size, 3) in [0, 1]."""
    texture = load_texture(name)
    full = texture.shape[0]
    crop = int(round(rng.uniform(0.4, 0.65) * full))
    r0, c0 = int(rng.integers(0, full - crop + 1)), int(rng.integers(0, full - crop + 1))
    tile = texture[r0 : r0 + crop, c0 : c0 + crop]
    tile = np.rot90(tile, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    tile = _resize(np.ascontiguousarray(tile), (size, size))
    gain, offset = rng.uniform(0.93, 1.07), rng.uniform(-0.03, 0.03)
    mean = tile.mean()
    tile = mean + gain * (tile - mean) + offset
    rgb = tile[:, :, None] * np.asarray(TEXTURES[name].tint)[None, None, :]
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    # Level 1 is both faster and (on these noisy textures) smaller than the default 6.
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


# Stable stream ids so that, e.g., changing n_train never changes the test images.
_SPLIT_IDS = {"train/good": 0, "test/good": 1}


def _image_rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    category_id = sorted(TEXTURES).index(category)
    split_id = _SPLIT_IDS.get(split)
    if split_id is None:
        split_id = 10 + DEFECT_KINDS.index(split.split("/", 1)[1])
    return np.random.default_rng([seed, category_id, split_id, index])


def _is_demo_dataset(folder: Path) -> bool:
    readme = folder / "README.md"
    try:
        with readme.open(encoding="utf-8") as handle:
            return handle.readline().strip() == README_MARKER
    except (OSError, UnicodeDecodeError):
        return False


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RladError(f"{out}: exists and is not a folder; choose another OUT")
    if out.is_dir() and any(out.iterdir()) and not _is_demo_dataset(out):
        raise RladError(
            f"{out}: folder is not empty and is not an rlad demo dataset (no README.md written by "
            "`rlad data demo`); refusing to overwrite it: choose another OUT or empty it"
        )


def _remove_stale_temp_dirs(out: Path) -> None:
    """Temp folders of earlier builds that were killed (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.rlad-tmp-*"):
        try:
            pid = int(stale.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def _readme_text(seed: int, image_size: int, categories: tuple[str, ...], kinds: tuple[str, ...],
                 counts: dict[str, dict[str, int]]) -> str:
    import skimage

    from rlad import __version__

    lines = [
        README_MARKER,
        "# rlad demo dataset",
        "",
        "Generated by `rlad data demo` (rlad.data.synth.write_demo_dataset): tiles of real CC0 textures",
        "with synthetic defects and exact masks, in MVTec AD layout. Not a real inspection dataset: use it",
        "to try rlad end to end, not to claim anything about industrial performance.",
        "",
        f"- seed: {seed} (same seed, same rlad {__version__} and scikit-image {skimage.__version__} ->"
        " byte-identical files)",
        f"- images: {image_size}x{image_size} RGB PNG (grey textures tinted per category)",
        "- masks: single-channel PNG, 0 = normal, 255 = defect, same size as the image",
        f"- defect types: {', '.join(kinds)}",
        "",
        "## Mask convention",
        "A mask marks exactly the defect region: drawn defects are blended with an alpha that is >= 0.75",
        "inside the region and <= 0.25 on its 1-pixel anti-aliased fringe, and the mask is alpha >= 0.5.",
        "Only that fringe changes outside the mask; every masked pixel changes by at least 4 grey levels.",
        "`patch` defects (Poisson-blended cut-paste) change masked pixels only.",
        "",
        "## Textures and licences",
    ]
    lines += [f"- {name}: {TEXTURES[name].licence}" for name in categories]
    lines += [
        "",
        "The textures are dedicated to the public domain (CC0 1.0) by their authors; these files are",
        "derived from them by rlad.",
        "",
        "## Counts",
        "",
        "| category | " + " | ".join(next(iter(counts.values()))) + " |",
        "|---" * (1 + len(next(iter(counts.values())))) + "|",
    ]
    lines += [f"| {cat} | " + " | ".join(str(v) for v in row.values()) + " |" for cat, row in counts.items()]
    return "\n".join(lines) + "\n"


def _write_category(root: Path, category: str, seed: int, image_size: int, n_train: int,
                    n_test_good: int, n_per_defect: int, kinds: tuple[str, ...], bar) -> dict[str, int]:
    others = [name for name in sorted(TEXTURES) if name != category]
    counts: dict[str, int] = {}
    for split, count in (("train/good", n_train), ("test/good", n_test_good)):
        for index in range(count):
            tile = texture_tile(category, image_size, _image_rng(seed, category, split, index))
            _save_png(root / category / split / f"{index:03d}.png", _to_uint8(tile))
            bar.update(1)
        counts[split] = count
    for kind in kinds:
        split = f"test/{kind}"
        for index in range(n_per_defect):
            rng = _image_rng(seed, category, split, index)
            tile = texture_tile(category, image_size, rng)
            source = None
            if kind in ("perlin", "patch"):
                source = texture_tile(others[int(rng.integers(len(others)))], image_size, rng)
            image, mask = add_defect(tile, kind, rng, source=source)
            _save_png(root / category / split / f"{index:03d}.png", _to_uint8(image))
            _save_png(root / category / "ground_truth" / kind / f"{index:03d}_mask.png",
                      np.where(mask, 255, 0).astype(np.uint8))
            bar.update(1)
        counts[split] = n_per_defect
    return counts


def write_demo_dataset(
    out: Path | str,
    seed: int = 0,
    image_size: int = 256,
    n_train: int = 60,
    n_test_good: int = 20,
    n_per_defect: int = 8,
    categories: tuple[str, ...] | None = None,
    defect_kinds: tuple[str, ...] | None = None,
) -> dict:
    """Write the embedded demo dataset (MVTec layout) to `out` and return a summary of the counts.

    Refuses (RladError) a non-empty folder that is not an earlier demo dataset; an earlier one is
    rebuilt in a temporary sibling folder and swapped in, so an interrupted build never leaves a half
    dataset at `out`. Deterministic: the same arguments give byte-identical files.
    """
    from rlad.engine.progress import progress

    out = Path(out)
    categories = tuple(categories) if categories is not None else tuple(TEXTURES)
    kinds = tuple(defect_kinds) if defect_kinds is not None else DEFECT_KINDS
    for name in categories:
        if name not in TEXTURES:
            raise RladError(f"unknown demo category {name!r}; choose from {', '.join(TEXTURES)}")
    for kind in kinds:
        if kind not in DEFECT_KINDS:
            raise RladError(f"unknown defect kind {kind!r}; choose from {', '.join(DEFECT_KINDS)}")
    if not categories or len(set(categories)) != len(categories):
        raise RladError(f"categories must be a non-empty list without repeats, got {categories}")
    if image_size < 32:
        raise RladError(f"image_size must be >= 32 pixels, got {image_size}")
    if min(n_train, n_test_good, n_per_defect) < 0 or n_train == 0:
        raise RladError("n_train must be >= 1 and n_test_good, n_per_defect >= 0")
    _check_out(out)

    started = time.perf_counter()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_dirs(out)
        temp = out.parent / f".{out.name}.rlad-tmp-{os.getpid()}"
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
    except OSError as exc:
        raise RladError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from exc

    total = len(categories) * (n_train + n_test_good + n_per_defect * len(kinds))
    counts: dict[str, dict[str, int]] = {}
    try:
        with progress(total=total, desc="demo dataset") as bar:
            for category in categories:
                counts[category] = _write_category(
                    temp, category, seed, image_size, n_train, n_test_good, n_per_defect, kinds, bar
                )
        (temp / "README.md").write_text(
            _readme_text(seed, image_size, categories, kinds, counts), encoding="utf-8"
        )
        _swap_in(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return {
        "out": str(out),
        "seed": seed,
        "image_size": image_size,
        "categories": counts,
        "defect_kinds": list(kinds),
        "total_images": total,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _swap_in(temp: Path, out: Path) -> None:
    if not out.exists():
        temp.rename(out)
        return
    old = out.parent / f".{out.name}.rlad-old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    try:
        temp.rename(out)
    except BaseException:
        old.rename(out)  # put the earlier dataset back rather than leave no dataset at all
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_tiny_dataset(
    out: Path | str,
    seed: int = 0,
    image_size: int = 64,
    n_train: int = 8,
    n_test_good: int = 4,
    n_per_defect: int = 2,
    categories: tuple[str, ...] = ("brick",),
    defect_kinds: tuple[str, ...] | None = ("scratch", "hole", "stain", "patch"),
) -> dict:
    """A small demo dataset for tests (well under a second): one category, 64x64, a few images."""
    return write_demo_dataset(out, seed, image_size, n_train, n_test_good, n_per_defect, categories, defect_kinds)


def cli_demo(args) -> int:
    """`rlad data demo OUT [--seed N]`."""
    summary = write_demo_dataset(Path(args.out), seed=int(getattr(args, "seed", 0) or 0))
    per_category = next(iter(summary["categories"].values()))
    print(
        f"wrote demo dataset to {summary['out']} (seed {summary['seed']}): {len(summary['categories'])} "
        f"categories ({', '.join(summary['categories'])}), {summary['total_images']} images of "
        f"{summary['image_size']}x{summary['image_size']} in {summary['seconds']:.1f} s"
    )
    print("per category: " + ", ".join(f"{split} {n}" for split, n in per_category.items()))
    return 0
