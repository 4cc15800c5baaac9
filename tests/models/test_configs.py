"""One validation style for every model config: `validate()` returns the config when it is usable
and otherwise raises one ConfigError that lists every problem, each named as a `--set` key."""

from __future__ import annotations

import pytest

from rlad.errors import ConfigError
from rlad.workflows import detection
from rlad.models.base import AnomalyModel
from rlad.models.registry import MODEL_NAMES, get_model_class

# Two independent bad values per model: both must be reported in one error.
TWO_PROBLEMS = {
    "pixelstats": ({"blur_sigma": -1.0}, ["model.blur_sigma"]),
    "patchcore": ({"coreset_ratio": 0.0, "knn_chunk_mb": -1.0}, ["model.coreset_ratio", "model.knn_chunk_mb"]),
    "padim": ({"n_features": 0, "regularization": 0}, ["model.n_features", "model.regularization"]),
    "ae": ({"steps": 0, "lr": 0}, ["model.steps", "model.lr"]),
    "nbs": ({"window": 30, "score_pool": 0}, ["model.window", "model.score_pool"]),
    "refine": ({"prior_boost": -1.0, "blur_sigma": -1.0}, ["model.prior_boost", "model.blur_sigma"]),
}


def test_every_model_is_covered():
    assert set(TWO_PROBLEMS) == set(MODEL_NAMES)
    assert not hasattr(AnomalyModel, "check_config")


@pytest.mark.parametrize("method", MODEL_NAMES)
def test_defaults_validate_to_themselves(method):
    config = get_model_class(method).Config()
    assert config.validate() is config


@pytest.mark.parametrize("method", MODEL_NAMES)
def test_all_problems_are_reported_at_once_by_validate_the_model_and_the_harness(method):
    cls = get_model_class(method)
    changes, keys = TWO_PROBLEMS[method]
    with pytest.raises(ConfigError) as raised:
        cls.Config(**changes).validate()
    for key in keys:
        assert key in str(raised.value)
    with pytest.raises(ConfigError, match=keys[0]):
        cls(cls.Config(**changes))  # library use: refused on construction
    overrides = [f"model.{name}={value}" for name, value in changes.items()]
    with pytest.raises(ConfigError, match=keys[-1]):
        detection.build_config(method, None, overrides)  # the CLI: refused before any data is read
