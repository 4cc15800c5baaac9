"""One threshold/normalisation post-processor for every model.

Thresholds are chosen on a validation split carved from the training side, never on the test split:
- with labelled defective images in the validation split: the threshold that maximises F1 there
  (pixel threshold over pixels, image threshold over images);
- normal-only validation (unsupervised protocol): the pixel threshold is a high quantile of the
  normal validation pixels (`normal_pixel_quantile`, default 0.999: about one false-positive pixel in
  a thousand on normal images) and the image threshold the maximum normal validation image score.
Scores are then mapped so that the threshold lands on 0.5 and the normal validation minimum on 0: a
user reads any model's output the same way. Below the threshold the map is linear; above it the score
approaches 1 without reaching it, `1 - 0.5 / (1 + z)` with `z` the excess over the threshold in units
of (threshold - minimum), so two anomalous images never tie at 1.0 and their order is kept (the curve
is continuous with a continuous slope at 0.5, and `raw_from_score` inverts it exactly). A slowly
approaching curve, not an exponential one: even a value a million spans above the threshold stays
below 1 in float32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class PostProcessor:
    pixel_threshold: float = 0.5
    image_threshold: float = 0.5
    pixel_min: float = 0.0
    image_min: float = 0.0
    rule: str = "unfitted"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PostProcessor":
        return cls(**data)

    @staticmethod
    def _normalise(values: np.ndarray, low: float, threshold: float, dtype=np.float32) -> np.ndarray:
        span = max(threshold - low, 1e-12)
        z = (np.asarray(values, dtype=np.float64) - threshold) / span
        above = 1.0 - 0.5 / (1.0 + np.maximum(z, 0.0))
        return np.where(z > 0, above, np.clip(0.5 * (1.0 + z), 0.0, 0.5)).astype(dtype)

    @staticmethod
    def _raw(score: float, low: float, threshold: float) -> float:
        if not 0.0 < score < 1.0:
            raise ValueError(f"a score threshold must be in (0, 1), got {score}")
        z = 2.0 * score - 1.0 if score <= 0.5 else 0.5 / (1.0 - score) - 1.0
        return threshold + z * max(threshold - low, 1e-12)

    def raw_from_score(self, score: float, pixel: bool = False) -> float:
        """The raw model value that maps to `score` (image scores, or pixel values with `pixel`)."""
        if pixel:
            return self._raw(score, self.pixel_min, self.pixel_threshold)
        return self._raw(score, self.image_min, self.image_threshold)

    def normalise_maps(self, maps: np.ndarray) -> np.ndarray:
        return self._normalise(maps, self.pixel_min, self.pixel_threshold)

    def normalise_scores(self, scores: np.ndarray) -> np.ndarray:
        return self._normalise(scores, self.image_min, self.image_threshold, np.float64)

    def masks(self, maps: np.ndarray) -> np.ndarray:
        return np.asarray(maps) >= self.pixel_threshold

    def is_anomalous(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= self.image_threshold


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold (predict positive when score >= t) that maximises F1; exact."""
    from rlad.metrics.pixel import f1_max

    _, threshold = f1_max(np.asarray(scores).ravel(), np.asarray(labels).ravel().astype(bool))
    return float(threshold)


def fit_postprocessor(
    maps: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray,
    normal_pixel_quantile: float = 0.999,
) -> PostProcessor:
    """Fit thresholds on validation predictions (maps (N,S,S), scores (N,), labels (N,), masks (N,S,S))."""
    labels = np.asarray(labels).astype(bool)
    if not (~labels).any():
        raise ValueError("the validation split needs at least one normal image")
    normal_maps = maps[~labels]
    pixel_min = float(normal_maps.min())
    image_min = float(scores[~labels].min())
    if labels.any() and np.asarray(masks)[labels].any():
        pixel_threshold = best_f1_threshold(maps, masks)
        image_threshold = best_f1_threshold(scores, labels)
        rule = "f1 on validation (labelled defects)"
    else:
        pixel_threshold = float(np.quantile(normal_maps, normal_pixel_quantile))
        image_threshold = float(scores[~labels].max())
        rule = f"normal-only: pixel q{normal_pixel_quantile}, image max"
    return PostProcessor(
        pixel_threshold=pixel_threshold,
        image_threshold=image_threshold,
        pixel_min=min(pixel_min, pixel_threshold),
        image_min=min(image_min, image_threshold),
        rule=rule,
    )
