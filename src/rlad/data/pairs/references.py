"""Choosing the defect-free reference image for a query: `random` (any train/good image of the
category) or `similar` (the train/good image whose global feature, a standardised 32x32 grey
thumbnail, has the highest cosine similarity with the query's, penalised by the difference in aspect
ratio). The pixel feature is cheap and good for aligned products; for textures any normal tile is as
good as any other.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from rlad.data.images import load_image
from rlad.data.transforms import resize_image
from rlad.errors import DataError

REFERENCE_MODES = ("random", "similar")
THUMBNAIL = 32


def global_feature(image: np.ndarray) -> np.ndarray:
    """A cheap global descriptor: the standardised 32x32 grey thumbnail, unit length."""
    grey = resize_image(np.asarray(image, np.float32), THUMBNAIL).mean(axis=2).ravel()
    grey = grey - grey.mean()
    return grey / (np.linalg.norm(grey) + 1e-8)


def similarity(query_feature: np.ndarray, query_hw: tuple[int, int], features: np.ndarray,
               sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    """Cosine similarity of thumbnails minus |log aspect-ratio difference| (squashed thumbnails of
    very differently shaped crops look alike without being alike)."""
    aspect = math.log(query_hw[1] / query_hw[0])
    penalty = np.array([abs(aspect - math.log(w / h)) for h, w in sizes])
    return features @ query_feature - penalty


def image_features(paths: Sequence[Path], desc: str) -> np.ndarray:
    """`global_feature` of every image, one row each (decoded on 4 threads, with a progress bar)."""
    from rlad.engine.progress import progress

    def one(path):
        return global_feature(load_image(path))

    out = []
    with ThreadPoolExecutor(max_workers=4) as pool, progress(total=len(paths), desc=desc) as bar:
        for feature in pool.map(one, paths):
            out.append(feature)
            bar.update(1)
    return np.stack(out) if out else np.zeros((0, THUMBNAIL * THUMBNAIL), np.float32)


class ReferencePicker:
    """Chooses a normal reference for a query image (random or most similar)."""

    def __init__(self, normals: list, mode: str, rng: np.random.Generator, category: str):
        if mode not in REFERENCE_MODES:
            raise DataError(f"--reference {mode!r} is not one of {', '.join(REFERENCE_MODES)}")
        if not normals:
            raise DataError(f"{category}: train/good has no images to use as references")
        self.normals, self.mode, self.rng = normals, mode, rng
        self.features = image_features([s.path for s in normals], f"{category}: references") if mode == "similar" else None

    def pick(self, query_path: Path, query_hw: tuple[int, int], exclude: Path | None = None,
             query_feature: np.ndarray | None = None):
        candidates = [i for i, s in enumerate(self.normals) if exclude is None or s.path != exclude]
        if not candidates:
            candidates = list(range(len(self.normals)))
        if self.mode == "random":
            return self.normals[int(self.rng.choice(candidates))]
        if query_feature is None:
            query_feature = global_feature(load_image(query_path))
        scores = similarity(query_feature, query_hw, self.features[candidates],
                            [self.normals[i].size for i in candidates])
        return self.normals[candidates[int(np.argmax(scores))]]
