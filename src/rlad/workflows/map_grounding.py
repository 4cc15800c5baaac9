"""Pixel anomaly maps as difference-grounding baselines (DifferAD-R1's evaluation protocol): a map
maker by name (`map_baseline`), rlad's own pixel models fitted on the evaluation category
(`PixelModelMaps`), and their evaluation with a threshold fitted on a calibration split
(`evaluate_map_baseline`). The map-to-box rules themselves are in `rlad.policies.baselines`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rlad.errors import ConfigError
from rlad.policies.baselines import DEFAULT_SIZE, MAP_BASELINES, boxes_from_maps, fit_threshold, load_resized
from rlad.tasks.grounding import grounding_report

PIXEL_MODEL_BASELINES = ("patchcore", "padim")


@dataclass
class PixelModelMaps:
    """Maps from an rlad pixel model (PatchCore, PaDiM, ...) fitted on a category's train/good."""

    method: str
    data_dir: str
    run_dir: str
    weights: str = ""
    image_size: int = DEFAULT_SIZE

    def fit(self):
        from rlad.workflows.detection import build_config, fit

        overrides = [f"image_size={self.image_size}"]
        if self.weights:
            overrides.append(f"model.backbone.weights={self.weights}")
        return fit(self.method, self.data_dir, self.run_dir, build_config(self.method, overrides=overrides))

    def __call__(self, records: Sequence, size: int = DEFAULT_SIZE) -> np.ndarray:
        from rlad.data.transforms import resize_map_to
        from rlad.workflows.detection import load_run, predict_arrays

        if not Path(self.run_dir, "model.pt").is_file():
            self.fit()
        loaded = load_run(self.run_dir)
        images = load_resized([r.query for r in records], loaded.cfg.image_size)
        pred = predict_arrays(loaded.model, np.round(images * 255).astype(np.uint8), loaded.cfg.batch_size)
        if pred.maps.shape[-1] == size:
            return pred.maps
        return np.stack([resize_map_to(m, (size, size)) for m in pred.maps])


def map_baseline(name: str, **options) -> Callable:
    """A map maker by name; pixel models need data_dir= and run_dir= (where to fit and keep them)."""
    if name in MAP_BASELINES:
        fn = MAP_BASELINES[name]
        return lambda records, size=DEFAULT_SIZE: fn(records, size=size, **options)
    if name in PIXEL_MODEL_BASELINES:
        missing = {"data_dir", "run_dir"} - set(options)
        if missing:
            raise ConfigError(f"baseline {name!r} needs {', '.join(sorted(missing))} (the category folder to fit on)")
        return PixelModelMaps(name, **options)
    valid = ", ".join([*MAP_BASELINES, *PIXEL_MODEL_BASELINES])
    raise ConfigError(f"unknown map baseline {name!r}; available: {valid}")


def evaluate_map_baseline(maps_fn: Callable, calibration: Sequence, test: Sequence, size: int = DEFAULT_SIZE) -> dict:
    """Threshold fitted on `calibration`, grounding metrics (+ exploit stats) on `test`."""
    threshold, calibration_metrics = fit_threshold(maps_fn(list(calibration), size=size), calibration)
    boxes = boxes_from_maps(maps_fn(list(test), size=size), test, threshold)
    report = grounding_report(boxes, test)
    report["threshold"] = threshold
    report["calibration_f1"] = calibration_metrics["f1"]
    return report
