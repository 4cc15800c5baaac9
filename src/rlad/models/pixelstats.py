"""The trivial reference scorer: a per-pixel Gaussian of the normal training images' colours.

No learning beyond a mean and a variance per pixel; it only works for aligned products, and serves
as the floor every real model must clear (and as the demo's first sanity check of the metrics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlad.config import raise_if_problems
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.maps import gaussian_blur


@dataclass
class PixelStatsConfig:
    image_size: int = 256
    blur_sigma: float = 2.0
    """Gaussian smoothing of the map, in pixels at any image_size (not scaled, unlike the other models)."""

    def validate(self) -> "PixelStatsConfig":
        problems = []
        if self.blur_sigma < 0:
            problems.append(f"model.blur_sigma must be >= 0, got {self.blur_sigma}")
        raise_if_problems(problems)
        return self


class PixelStats(AnomalyModel):
    name = "pixelstats"
    Config = PixelStatsConfig

    def __init__(self, config: PixelStatsConfig):
        super().__init__(config)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, data: FitData, run=None) -> None:
        images = FitData.to_tensor(data.normal)
        self.mean = images.mean(0)
        self.std = images.std(0, unbiased=False).clamp_min(0.02)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> AnomalyMap:
        z = ((images - self.mean) / self.std).abs().mean(1, keepdim=True)
        maps = gaussian_blur(z, self.config.blur_sigma)[:, 0]
        return AnomalyMap(maps.numpy(), maps.flatten(1).amax(1).numpy())

    def state_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.std = state["mean"], state["std"]


