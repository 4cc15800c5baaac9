"""Pixel maps as grounding baselines (rlad.workflows.map_grounding): the registry, rlad's pixel models
fitted on the category, and the evaluation with a calibration threshold."""

from __future__ import annotations

import numpy as np
import pytest

from rlad.errors import ConfigError
from rlad.workflows.map_grounding import PixelModelMaps, evaluate_map_baseline, map_baseline


def test_absdiff_baseline_evaluates_with_a_calibration_threshold(square_pairs):
    report = evaluate_map_baseline(map_baseline("absdiff"), square_pairs[:8], square_pairs[8:], size=64)
    assert report["acc_at_0_3"] == 1.0 and report["f1"] == 1.0
    assert report["threshold"] > 0


def test_nnfeature_baseline_runs_on_a_random_trunk(square_pairs):
    maps = map_baseline("nnfeature", weights="random")(square_pairs[:4], size=64)
    assert maps.shape == (4, 64, 64) and np.isfinite(maps).all()


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown map baseline 'nope'"):
        map_baseline("nope")
    with pytest.raises(ConfigError, match="data_dir"):
        map_baseline("patchcore")


def test_pixel_model_maps_fit_once_on_the_category(tiny_mvtec, tmp_path):
    from rlad.data.pairs.builders import real_pairs
    from rlad.data.folder import discover

    records = real_pairs(discover(tiny_mvtec), reference="random")
    maker = PixelModelMaps("pixelstats", str(tiny_mvtec), str(tmp_path / "run"), image_size=64)
    maps = maker(records, size=32)
    assert maps.shape == (len(records), 32, 32)
    stamp = (tmp_path / "run" / "model.pt").stat().st_mtime_ns
    maker(records[:2], size=32)
    assert (tmp_path / "run" / "model.pt").stat().st_mtime_ns == stamp
