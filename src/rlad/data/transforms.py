"""Image/mask resizing, loading into compact caches, and joint geometric augmentation.

No torchvision: PIL does the resampling (its BILINEAR filter widens its kernel when shrinking, so
downscaling is antialiased) and scipy does the affine warps. Arrays are channel-last (H, W, 3) for
single decoded images and channel-first (3, S, S) once loaded for a model.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from rlad.data.folder import Sample
from rlad.data.images import load_image_channels, load_mask


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        height = width = int(size)
    else:
        height, width = (int(v) for v in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return height, width


def _resize_plane(plane: np.ndarray, size_hw: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    height, width = size_hw
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F").resize(
        (width, height), resample=resample
    )
    return np.asarray(resized, dtype=np.float32)


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a float (H, W, C) image to `size` (an int means square S x S, a pair is (height,
    width)); bilinear, antialiased when shrinking. Returns float32 (h, w, C)."""
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    size_hw = _size_hw(size)
    if image.shape[:2] == size_hw:
        return image.astype(np.float32, copy=True)
    return np.ascontiguousarray(_resized_planes(image, size_hw).transpose(1, 2, 0))


def _resized_planes(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A float (H, W, C) image resized as `resize_image` does, channel-first: float32 (C, h, w)."""
    if image.shape[:2] == size_hw:
        return image.transpose(2, 0, 1).astype(np.float32)  # a copy, C-contiguous
    return np.stack([_resize_plane(image[:, :, c], size_hw, Image.Resampling.BILINEAR) for c in range(image.shape[2])])


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a binary (H, W) mask: a target pixel is defect when at least half of the area it
    covers is defect. A non-empty mask never comes out empty (its best-covered pixels are kept),
    so a defective image keeps its label after shrinking a tiny defect."""
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    size_hw = _size_hw(size)
    source = np.asarray(mask) > 0
    if source.shape == size_hw:
        return source.copy()
    coverage = _resize_plane(source.astype(np.float32), size_hw, Image.Resampling.BOX)
    resized = coverage >= 0.5
    if not resized.any() and source.any():
        resized = coverage >= coverage.max() - 1e-6
    return resized


def resize_map_to(map_: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bring a float (h, w) anomaly map back to the original image size (height, width), bilinear."""
    if map_.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {map_.shape}")
    size_hw = _size_hw(size_hw)
    if map_.shape == size_hw:
        return map_.astype(np.float32, copy=True)
    return _resize_plane(map_, size_hw, Image.Resampling.BILINEAR)


def _load_planes(sample: Sample, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image float32 (C, S, S) with C = 1 for grey, 3 for colour (the same planes `resize_image`
    gives, without interleaving copies), and mask float32 (S, S) in {0, 1}."""
    image = load_image_channels(sample.path)
    size_hw = _size_hw(image_size)
    planes = _resized_planes(image, size_hw)
    if sample.mask_path is None:
        mask = np.zeros(size_hw, dtype=np.float32)
    else:
        mask = resize_mask(load_mask(sample.mask_path, expected_size=image.shape[:2]), image_size).astype(np.float32)
    return planes, mask


def _as_rgb(planes: np.ndarray) -> np.ndarray:
    return planes if planes.shape[0] == 3 else np.concatenate([planes] * 3)


def load_sample(sample: Sample, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image float32 (3, S, S) in [0, 1] and mask float32 (S, S) in {0, 1} (zeros without a mask)."""
    planes, mask = _load_planes(sample, image_size)
    return _as_rgb(planes), mask


def _load_sample_uint8(sample: Sample, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    planes, mask = _load_planes(sample, image_size)
    return _as_rgb(np.round(planes * 255.0).astype(np.uint8)), mask.astype(np.uint8)


def load_samples(
    samples: list[Sample], image_size: int, desc: str = "loading", workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize many samples into a compact cache: images uint8 (N, 3, S, S), masks
    uint8 (N, S, S) in {0, 1}. `workers` > 1 decodes on a thread pool (PIL releases the GIL)."""
    from rlad.engine.progress import progress

    height, width = _size_hw(image_size)
    images = np.empty((len(samples), 3, height, width), dtype=np.uint8)
    masks = np.empty((len(samples), height, width), dtype=np.uint8)
    if not samples:
        return images, masks

    def fill(results) -> None:
        for index, (image, mask) in enumerate(progress(results, desc=desc, total=len(samples))):
            images[index] = image
            masks[index] = mask

    if workers > 1 and len(samples) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            fill(pool.map(lambda s: _load_sample_uint8(s, image_size), samples))
    else:
        fill(_load_sample_uint8(s, image_size) for s in samples)
    return images, masks


def augmentation_matrix(
    shape_hw: tuple[int, int], rotation_deg: float, shift_hw: tuple[float, float], shear_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) for scipy.ndimage.affine_transform (it maps OUTPUT to INPUT coordinates)
    of: shear along columns, rotation about the centre, then a shift in pixels."""
    theta, shear = math.radians(rotation_deg), math.radians(shear_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    shearing = np.array([[1.0, 0.0], [math.tan(shear), 1.0]])
    forward = rotation @ shearing
    center = (np.array(shape_hw, dtype=np.float64) - 1.0) / 2.0
    inverse = np.linalg.inv(forward)
    offset = center - inverse @ (center + np.asarray(shift_hw, dtype=np.float64))
    return inverse, offset


def augment_pair(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    flip: bool = True,
    max_rotation: float = 30.0,
    max_shift: float = 0.1,
    max_shear: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random geometric transform to a (3, H, W) image and its (H, W) mask.

    Random horizontal/vertical flips, rotation in +-max_rotation degrees, shift up to max_shift of
    each side, shear in +-max_shear degrees. Both get the identical warp; the image is interpolated
    bilinearly, the mask by nearest neighbour so it stays binary. Borders are filled by reflection
    in both, so no black wedges appear that the image would show but the mask would call normal.
    Dtypes are kept (uint8 images are rounded back to uint8).
    """
    if image.ndim != 3 or mask.shape != image.shape[1:]:
        raise ValueError(f"expected image (C, H, W) and mask (H, W), got {image.shape} and {mask.shape}")
    height, width = mask.shape
    if flip and rng.random() < 0.5:
        image, mask = image[:, :, ::-1], mask[:, ::-1]
    if flip and rng.random() < 0.5:
        image, mask = image[:, ::-1, :], mask[::-1, :]
    rotation = rng.uniform(-max_rotation, max_rotation) if max_rotation else 0.0
    shift = (
        rng.uniform(-max_shift, max_shift) * height if max_shift else 0.0,
        rng.uniform(-max_shift, max_shift) * width if max_shift else 0.0,
    )
    shear = rng.uniform(-max_shear, max_shear) if max_shear else 0.0
    if rotation == 0.0 and shear == 0.0 and shift == (0.0, 0.0):
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)
    matrix, offset = augmentation_matrix((height, width), rotation, shift, shear)

    def warp(plane: np.ndarray, order: int) -> np.ndarray:
        return ndimage.affine_transform(plane, matrix, offset=offset, order=order, mode="reflect")

    warped = np.stack([warp(plane.astype(np.float32), 1) for plane in image])
    if image.dtype == np.uint8:
        warped = np.clip(np.round(warped), 0, 255).astype(np.uint8)
    else:
        warped = warped.astype(image.dtype, copy=False)
    warped_mask = warp((np.asarray(mask) > 0).astype(np.uint8), 0)
    return warped, warped_mask.astype(mask.dtype) if mask.dtype != bool else warped_mask.astype(bool)
