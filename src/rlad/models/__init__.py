"""Anomaly-map models. Each has a typed `Config` dataclass and implements `AnomalyModel`."""

from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.registry import MODEL_NAMES, get_model_class

__all__ = ["AnomalyMap", "AnomalyModel", "FitData", "MODEL_NAMES", "get_model_class"]
