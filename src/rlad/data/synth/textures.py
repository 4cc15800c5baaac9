"""The demo dataset's raw material: CC0 textures that scikit-image ships offline (brick, grass, gravel),
cut into randomly placed, turned and tinted tiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlad.data.synth.blend import resize_linear
from rlad.errors import RladError


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


def require_texture(name: str) -> Texture:
    """The texture (demo category) called `name`; RladError listing the choices for any other name."""
    if name not in TEXTURES:
        raise RladError(f"unknown demo category {name!r}; choose from {', '.join(TEXTURES)}")
    return TEXTURES[name]


def load_texture(name: str) -> np.ndarray:
    """One of the CC0 textures shipped with scikit-image, as float64 (512, 512) grey in [0, 1]."""
    require_texture(name)
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
    tile = resize_linear(np.ascontiguousarray(tile), (size, size))
    gain, offset = rng.uniform(0.93, 1.07), rng.uniform(-0.03, 0.03)
    mean = tile.mean()
    tile = mean + gain * (tile - mean) + offset
    rgb = tile[:, :, None] * np.asarray(TEXTURES[name].tint)[None, None, :]
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)
