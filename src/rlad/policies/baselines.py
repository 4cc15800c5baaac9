"""Map-to-box baselines for difference grounding (DifferAD-R1's evaluation protocol).

A pixel anomaly map becomes one box: pick the threshold that maximises F1 on a calibration split
(30% of the evaluation pairs, never the pairs reported on), binarise, keep the largest connected
component, box it; no pixel above the threshold means "normal" (the zero box). The F1 maximised is
the grounding F1 of `rlad.metrics.grounding` (TP = box with IoU >= 0.3 on a defective query, FP =
a box on a normal query), the quantity the table reports, not a pixel F1.

Registered map makers (`MAP_BASELINES`), each `maps(records) -> (N, S, S)` float maps of the query
resized to S x S (boxes are scaled back to original pixels):

* `absdiff`: |query - reference| after resizing both to S x S (no alignment), channel mean,
  Gaussian-blurred. The floor: it sees any change, including lighting and shifts.
* `nnfeature`: the nearest-neighbour cosine distance between the query's and the reference's
  frozen MobileNetV2 features (a one-shot PatchCore; the same fixed comparison the compact grounder
  starts from), averaged over stages 1, 2 and 4. It shows what the learned head adds.
Pixel models (`patchcore`, `padim`, fitted on the evaluation category's train/good images: far more
normal data than the single reference the grounders get) and the evaluation of any map maker are in
`rlad.workflows.map_grounding`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from rlad.errors import ConfigError

DEFAULT_SIZE = 256


# ---------------------------------------------------------------------------------- map -> box
def map_to_box(binary: np.ndarray) -> tuple[int, int, int, int]:
    """Box of the largest connected component of a boolean map (zero box when it is empty)."""
    from rlad.boxes import mask_to_box

    return tuple(int(v) for v in mask_to_box(binary, mode="largest"))


def scale_box(box, from_hw: tuple[int, int], to_hw: tuple[int, int]):
    if not any(box):
        return (0, 0, 0, 0)
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    x1, y1, x2, y2 = box
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def boxes_from_maps(maps: np.ndarray, records: Sequence, threshold: float) -> list:
    """One box per map (original query pixels): threshold, largest component, box."""
    return [scale_box(map_to_box(m >= threshold), m.shape, r.query_size) for m, r in zip(maps, records)]


def candidate_thresholds(maps: np.ndarray, n: int = 64) -> np.ndarray:
    """Thresholds worth trying: quantiles of the per-map maxima (each decides whether a map yields a
    box at all) and of the pooled pixel values (which decide the box size)."""
    maxima = maps.reshape(len(maps), -1).max(axis=1)
    rng = np.random.default_rng(0)
    pixels = maps.ravel()[rng.integers(0, maps.size, size=min(maps.size, 200_000))]
    qs = np.linspace(0.0, 1.0, n)
    values = np.concatenate([np.quantile(maxima, qs), np.quantile(pixels, 1.0 - np.geomspace(1e-4, 0.5, n))])
    return np.unique(values)


def fit_threshold(maps: np.ndarray, records: Sequence, n: int = 64) -> tuple[float, dict]:
    """The threshold maximising grounding F1 on (maps, records); ties go to Acc@0.3, then mIoU."""
    from rlad.metrics.grounding import grounding_metrics

    if len(maps) != len(records) or not len(records):
        raise ConfigError("fit_threshold needs one map per calibration pair (and at least one pair)")
    gt = [r.box for r in records]
    best, best_key, best_metrics = None, None, None
    for t in candidate_thresholds(maps, n):
        metrics = grounding_metrics(boxes_from_maps(maps, records, t), gt)
        key = (metrics["f1"], metrics["acc_at_0_3"], metrics["miou"])
        if best_key is None or key > best_key:
            best, best_key, best_metrics = float(t), key, metrics
    return best, best_metrics


# ------------------------------------------------------------------------------------- the maps
def load_resized(paths: Sequence[str], size: int) -> np.ndarray:
    from rlad.data.images import load_image
    from rlad.data.transforms import resize_image

    return np.stack([resize_image(load_image(p), size).transpose(2, 0, 1) for p in paths]).astype(np.float32)


def _blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    from rlad.models.maps import gaussian_blur

    return gaussian_blur(torch.from_numpy(maps)[:, None], sigma)[:, 0].numpy()


def absdiff_maps(records: Sequence, size: int = DEFAULT_SIZE, sigma: float = 4.0, batch: int = 32) -> np.ndarray:
    out = []
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        query = load_resized([r.query for r in chunk], size)
        reference = load_resized([r.reference for r in chunk], size)
        out.append(_blur(np.abs(query - reference).mean(axis=1), sigma * size / 256))
    return np.concatenate(out)


def nnfeature_maps(records: Sequence, size: int = DEFAULT_SIZE, weights: str = "", sigma: float = 4.0) -> np.ndarray:
    """Nearest-neighbour feature distance (the compact grounder's fixed comparison, no learning)."""
    import torch.nn.functional as F

    from rlad.policies.compact.config import CompactConfig
    from rlad.policies.compact.policy import CompactPolicy
    from rlad.rl.rollout import Prompt

    policy = CompactPolicy(CompactConfig(image_size=size, weights=weights))
    prompts = [Prompt(images=(r.reference, r.query), key=r.id) for r in records]
    policy.prepare(prompts)
    maps = []
    for prompt in prompts:
        fixed = policy.cache.pair(prompt)
        nearest = fixed[2::4].mean(0)  # raw nearest-neighbour distance of each stage
        maps.append(F.interpolate(nearest[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0])
    return _blur(torch.stack(maps).numpy(), sigma * size / 256)


MAP_BASELINES: dict[str, Callable] = {"absdiff": absdiff_maps, "nnfeature": nnfeature_maps}
