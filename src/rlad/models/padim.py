"""PaDiM (Defard et al., ICPR 2021) on the MobileNetV2 backbone.

Each patch position of the first (finest) feature level gets a multivariate Gaussian of its
embedding: features of several backbone levels, deeper ones resized (nearest) to the finest grid,
concatenated, and reduced to `n_features` randomly chosen channels (fixed by the seed). The anomaly
map is the Mahalanobis distance of each test embedding to its position's Gaussian, upsampled to the
image and Gaussian-smoothed (sigma 4 at 256 px); image score = the map's maximum.

Memory stays bounded for any number of training images: the mean and the scatter matrix of every
position are accumulated batch by batch (pairwise merge of batch statistics, Chan et al. 1979) instead
of stacking all embeddings, so fit memory is positions x n_features^2, whatever the image count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rlad.config import raise_if_problems
from rlad.engine import progress
from rlad.errors import ConfigError
from rlad.models.backbones import BackboneConfig, FeatureExtractor, build_feature_extractor
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.maps import scaled_sigma, upsample_and_smooth


@dataclass
class PaDiMConfig:
    image_size: int = 256
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(stages=[1, 2, 4]))
    n_features: int = 100
    """Randomly selected embedding channels (all of them when the backbone gives fewer)."""
    regularization: float = 0.01
    """Added to the covariance diagonal so it stays invertible (the paper's epsilon * I)."""
    blur_sigma: float = 4.0
    """Gaussian smoothing of the map, in pixels at 256 px (scaled with image_size)."""
    extract_batch: int = 8

    def validate(self) -> "PaDiMConfig":
        problems = []
        if self.n_features < 1:
            problems.append(f"model.n_features must be at least 1, got {self.n_features}")
        if self.regularization <= 0:
            problems.append(f"model.regularization must be > 0, got {self.regularization}")
        if self.extract_batch < 1:
            problems.append(f"model.extract_batch must be at least 1, got {self.extract_batch}")
        if self.blur_sigma < 0:
            problems.append(f"model.blur_sigma must be >= 0, got {self.blur_sigma}")
        raise_if_problems(problems)
        return self


class OnlineGaussian:
    """Per-position mean and scatter matrix accumulated batch by batch (numerically stable merge).

    Positions P, channels C; `update` takes (B, P, C). The mean is kept in float64, the scatter in
    `scatter_dtype` (P * C * C values: float32 halves the largest buffer); positions are processed in
    chunks of `chunk` so temporaries stay small next to the scatter itself.
    """

    def __init__(self, positions: int, channels: int, scatter_dtype: torch.dtype = torch.float32, chunk: int = 512):
        self.count = 0
        self.chunk = chunk
        self.mean = torch.zeros(positions, channels, dtype=torch.float64)
        self.scatter = torch.zeros(positions, channels, channels, dtype=scatter_dtype)

    def update(self, batch: torch.Tensor) -> None:
        n_b = batch.shape[0]
        if n_b == 0:
            return
        n_a = self.count
        total = n_a + n_b
        for lo in range(0, self.mean.shape[0], self.chunk):
            hi = lo + self.chunk
            part = batch[:, lo:hi].to(torch.float64)
            batch_mean = part.mean(0)  # (p, C)
            centred = (part - batch_mean).permute(1, 2, 0)  # (p, C, B)
            delta = batch_mean - self.mean[lo:hi]
            # Chan et al.: M2 = M2_a + M2_b + delta delta^T * n_a n_b / n
            merged = torch.baddbmm(
                torch.bmm(centred, centred.transpose(1, 2)), delta.unsqueeze(2), delta.unsqueeze(1),
                alpha=n_a * n_b / total,
            )
            self.scatter[lo:hi] += merged.to(self.scatter.dtype)
            self.mean[lo:hi] += delta * (n_b / total)
        self.count = total

    def covariance(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Unbiased (n - 1) covariance of positions lo:hi, float64 (p, C, C)."""
        if self.count < 2:
            raise ValueError("OnlineGaussian: need at least 2 samples for a covariance")
        return self.scatter[lo:hi].to(torch.float64) / (self.count - 1)


def select_channels(total: int, wanted: int, seed: int) -> torch.Tensor:
    """Sorted indices of `wanted` channels out of `total`, drawn without replacement with `seed`."""
    if wanted >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:wanted].sort().values


def padim_embedding(levels: list[torch.Tensor], channel_index: torch.Tensor) -> torch.Tensor:
    """(B, len(channel_index), H0, W0): the chosen channels of all levels on the finest grid.

    Channels are picked per level before resizing, so unused channels are never upsampled.
    """
    grid = levels[0].shape[-2:]
    parts, offset = [], 0
    for level in levels:
        c = level.shape[1]
        local = channel_index[(channel_index >= offset) & (channel_index < offset + c)] - offset
        offset += c
        if len(local) == 0:
            continue
        picked = level.index_select(1, local)
        if picked.shape[-2:] != grid:
            picked = F.interpolate(picked, size=grid, mode="nearest")
        parts.append(picked)
    return torch.cat(parts, dim=1)


def mahalanobis(embeddings: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """sqrt((x - mu)^T P (x - mu)) per image and position: embeddings (B, Pos, C) -> (B, Pos)."""
    diff = (embeddings - mean).transpose(0, 1)  # (Pos, B, C)
    projected = torch.bmm(diff, precision)  # (Pos, B, C)
    squared = (projected * diff).sum(-1).transpose(0, 1)
    return squared.clamp_min_(0.0).sqrt_()


class PaDiM(AnomalyModel):
    name = "padim"
    Config = PaDiMConfig

    def __init__(self, config: PaDiMConfig):
        super().__init__(config)
        self.extractor: FeatureExtractor | None = None
        self.channel_index: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None  # (Pos, C) float32
        self.precision: torch.Tensor | None = None  # (Pos, C, C) float32

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, Pos, C) embeddings and their grid (H, W)."""
        embedding = padim_embedding(self.extractor(images), self.channel_index)
        b, c, h, w = embedding.shape
        return embedding.permute(0, 2, 3, 1).reshape(b, h * w, c), (h, w)

    def fit(self, data: FitData, run=None) -> None:
        n_images = len(data.normal)
        if n_images < 2:
            raise ConfigError(f"padim needs at least 2 training images, got {n_images}")
        self.extractor = build_feature_extractor(self.config.backbone, seed=data.seed)
        self.channel_index = select_channels(sum(self.extractor.channels), self.config.n_features, data.seed)
        stats: OnlineGaussian | None = None
        bar = progress(total=n_images, desc="padim features")
        with torch.inference_mode():
            for start in range(0, n_images, self.config.extract_batch):
                batch, _ = self._embed(FitData.to_tensor(data.normal[start : start + self.config.extract_batch]))
                if stats is None:
                    stats = OnlineGaussian(batch.shape[1], batch.shape[2])
                stats.update(batch)
                bar.update(len(batch))
        bar.close()
        self._set_gaussians(stats)

    def _set_gaussians(self, stats: OnlineGaussian) -> None:
        positions, channels = stats.mean.shape
        eye = torch.eye(channels, dtype=torch.float64)
        self.precision = torch.empty(positions, channels, channels)
        for lo in range(0, positions, stats.chunk):
            regularised = stats.covariance(lo, lo + stats.chunk) + self.config.regularization * eye
            # Cholesky inverse in float64: with few images the covariances are near-singular.
            self.precision[lo : lo + stats.chunk] = torch.cholesky_inverse(torch.linalg.cholesky(regularised)).float()
        self.mean = stats.mean.float().contiguous()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> AnomalyMap:
        if self.mean is None or self.extractor is None:
            raise RuntimeError("PaDiM.predict before fit/load_state_dict")
        images = images.float()
        embeddings, (h, w) = self._embed(images)
        distances = mahalanobis(embeddings, self.mean, self.precision)
        sigma = scaled_sigma(self.config.blur_sigma, images.shape[-1])
        maps = upsample_and_smooth(distances.view(-1, h, w), tuple(images.shape[-2:]), sigma)
        return AnomalyMap(maps.numpy(), maps.flatten(1).amax(1).numpy())

    def state_dict(self) -> dict:
        return {
            "backbone": self.extractor.weights_state(),
            "channel_index": self.channel_index,
            "mean": self.mean,
            "precision": self.precision,
        }

    def load_state_dict(self, state: dict) -> None:
        self.extractor = FeatureExtractor.from_weights_state(
            self.config.backbone.stages, state["backbone"], self.config.backbone.micro_batch
        )
        self.channel_index = state["channel_index"]
        self.mean = state["mean"]
        self.precision = state["precision"]

