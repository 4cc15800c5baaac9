"""Model names -> classes, imported lazily so one model's import cost is not paid by the others."""

from __future__ import annotations

import importlib

from rlad.errors import ConfigError

_MODELS = {
    "nbs": "rlad.models.nbs.model:NBSModel",
    "refine": "rlad.models.nbs.refiner:PriorRefiner",
    "patchcore": "rlad.models.patchcore:PatchCore",
    "padim": "rlad.models.padim:PaDiM",
    "ae": "rlad.models.ae:AutoencoderBaseline",
    "pixelstats": "rlad.models.pixelstats:PixelStats",
}
MODEL_NAMES = tuple(_MODELS)
# Former names that saved runs still carry; they load (and fit) as the new method, but are not offered.
_ALIASES = {"supervised": "refine"}  # runs made before `refine` had its own name (issue 19)


def get_model_class(name: str):
    name = _ALIASES.get(name, name)
    if name not in _MODELS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(MODEL_NAMES)}, compact")
    module, attr = _MODELS[name].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"method {name!r} is not available in this build ({exc})") from None
