"""Put one image's content into another: Poisson (gradient-domain) blending and cut-and-paste of a
real defect onto a normal image (`paste_defect`), plus the bilinear resize they use.

Images are float arrays (H, W) or (H, W, C) in [0, 1]; masks are bool (H, W).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from rlad.data.synth.noise import largest_component
from rlad.errors import DataError

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


def resize_linear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to `size` (height, width), edge-extended, anti-aliased when shrinking; float64."""
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
    patch = resize_linear(crop_image, new_size)
    # The mask is resized like an alpha map and thresholded at 0.5 (same convention as add_defect).
    patch_alpha = resize_linear(crop_mask, new_size)
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
