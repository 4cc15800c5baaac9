"""Pictures people look at instead of reading numbers: heatmaps, masks, overlays, report plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.clip(values, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def save_heatmap(normalised_map: np.ndarray, path: Path) -> None:
    """A [0, 1] map (0.5 = the fitted threshold) as a colour PNG."""
    Image.fromarray(_colormap(normalised_map)).save(path)


def save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray((np.asarray(mask, bool) * 255).astype(np.uint8), mode="L").save(path)


def overlay(image: np.ndarray, normalised_map: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.45) -> np.ndarray:
    """The image with the heatmap blended in and the mask outline drawn in white; uint8 (H, W, 3)."""
    base = np.clip(image, 0, 1) * 255
    heat = _colormap(normalised_map).astype(np.float32)
    weight = alpha * np.clip(normalised_map, 0, 1)[..., None] * 2
    out = base * (1 - np.clip(weight, 0, alpha)) + heat * np.clip(weight, 0, alpha)
    if mask is not None and np.any(mask):
        from scipy import ndimage

        edge = mask & ~ndimage.binary_erosion(mask)
        out[edge] = 255
    return out.astype(np.uint8)


def save_overlay(image: np.ndarray, normalised_map: np.ndarray, mask: np.ndarray | None, path: Path) -> None:
    Image.fromarray(overlay(image, normalised_map, mask)).save(path)
