"""The contract every pixel-level model implements (docs/architecture.md, "One harness for every pixel model").

Models work on tensors at their own square resolution; the harness in `rlad.workflows.detection` does the
folder handling, resizing, batching, thresholds, metrics and run directories, so that every model
gets identical post-processing and evaluation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass
class FitData:
    """What a model is trained on, already resized to `image_size` and stored compactly (uint8).

    `normal` are unlabelled defect-free training images. `labeled_images`/`labeled_masks` are the few
    labelled defective images of the semi-supervised protocol (empty for unsupervised runs; models
    that cannot use them ignore them).
    """

    normal: np.ndarray  # uint8 (N, 3, S, S)
    labeled_images: np.ndarray  # uint8 (M, 3, S, S)
    labeled_masks: np.ndarray  # uint8 (M, S, S) in {0, 1}
    seed: int = 0

    @property
    def image_size(self) -> int:
        return int(self.normal.shape[-1])

    @staticmethod
    def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(images_uint8)).float().div_(255.0)


@dataclass
class AnomalyMap:
    """Per-pixel anomaly maps (higher = more anomalous) and one score per image, raw (unnormalised)."""

    maps: np.ndarray  # float32 (N, S, S)
    scores: np.ndarray  # float32 (N,)

    def __post_init__(self):
        self.maps = np.asarray(self.maps, dtype=np.float32)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if self.maps.ndim != 3 or self.maps.shape[0] != self.scores.shape[0]:
            raise ValueError(f"AnomalyMap: maps {self.maps.shape} and scores {self.scores.shape} disagree")

    @staticmethod
    def concat(parts: list["AnomalyMap"]) -> "AnomalyMap":
        return AnomalyMap(np.concatenate([p.maps for p in parts]), np.concatenate([p.scores for p in parts]))


class AnomalyModel(ABC):
    """fit / predict / state. `Config` is a dataclass with at least `image_size: int` and a
    `validate()` that raises one ConfigError listing every value `fit` cannot run with, and
    returns the config (the harness calls it before any data is read)."""

    name: ClassVar[str]
    Config: ClassVar[type]
    uses_labels: ClassVar[bool] = False  # True for semi-supervised models (NBS, supervised control)

    def __init__(self, config: Any):
        # Validated here as well as in the harness, so library use fails as early and as clearly.
        self.config = config.validate()

    @abstractmethod
    def fit(self, data: FitData, run: Any | None = None) -> None:
        """Train. `run` is a RunDir for checkpoints/logs (None in library use); resume if it has one."""

    @abstractmethod
    def predict(self, images: torch.Tensor) -> AnomalyMap:
        """images: float (B, 3, S, S) in [0, 1]. Deterministic for a fitted model."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to predict again (weights, memory banks, statistics) as tensors/arrays."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    def extra_files(self) -> dict[str, Any]:
        """Optional extra artefacts for the run directory (e.g. plots), name -> bytes."""
        return {}


@dataclass
class ImageNetNorm:
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

