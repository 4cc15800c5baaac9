"""Per-image context maps fed to the NBS predictor next to the loss profile (a deviation, docs/nbs.md).

The paper's predictor sees only the loss profile (10 steps in the paper, `window` = 8 here). On
real data that signal is weak (on magnetic tile the profile alone ranks defect pixels barely above
chance), so rlad can add, per pixel of the predictor grid:

- `none`: nothing (the paper's input);
- `image`: the grey image;
- `backbone`: frozen ImageNet MobileNetV2 features of several stages, resized to the grid;
- `patchcore`: those features plus a PatchCore map (nearest-normal-patch distance, standardised on
  normal training images) as the last channel. The predictor then learns a *correction* of that
  unsupervised prior from the labelled defects (`Predictor(prior_residual=True)`), so five labelled
  images refine a strong starting point instead of having to find defects from scratch.

Every channel is computed once per image from the image alone (no profile), so the supervised
refiner (`rlad.models.nbs.refiner`) can use exactly the same context without the profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from rlad.errors import ConfigError
from rlad.models.backbones import ARCHS, BackboneConfig, FeatureExtractor, build_feature_extractor
from rlad.models.base import FitData
from rlad.models.maps import area_resize, grey, scaled_sigma, upsample_and_smooth
from rlad.models.patchcore import PatchCore, PatchCoreConfig

CONTEXTS = ("none", "image", "backbone", "patchcore")
REFERENCE_IMAGES = 32  # training normals whose prior maps set its standardisation


@dataclass
class ContextConfig:
    kind: str = "patchcore"
    """none (the paper: profile only) | image | backbone | patchcore (backbone + PatchCore prior)."""
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(stages=[1, 2, 4]))
    """Frozen features for `backbone`/`patchcore` (ImageNet weights by default; rlad.models.weights)."""
    prior_stages: list[int] = field(default_factory=lambda: [2, 4])
    """Stages of the PatchCore prior (anomalib's default pair)."""
    prior_coreset_ratio: float = 0.1
    prior_max_patches: int = 100_000


def to_grid(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, grid, grid), bilinear (maps already on the grid stay as they are: the
    bilinear resize to the same size is the identity)."""
    if tuple(maps.shape[-2:]) == (grid, grid):
        return maps
    return F.interpolate(maps, size=(grid, grid), mode="bilinear", align_corners=False)


class ContextEncoder:
    """fit(normal images) once; then images (B, 3, S, S) in [0, 1] -> (B, channels, grid, grid)."""

    def __init__(self, config: ContextConfig, grid: int):
        if config.kind not in CONTEXTS:
            raise ConfigError(f"model.context.kind={config.kind!r}: choose one of {', '.join(CONTEXTS)}")
        self.config = config
        self.grid = grid
        self.extractor: FeatureExtractor | None = None
        self.prior: PatchCore | None = None
        self.prior_mean = 0.0
        self.prior_std = 1.0

    @property
    def channels(self) -> int:
        kind = self.config.kind
        if kind == "none":
            return 0
        if kind == "image":
            return 1
        features = sum(ARCHS[self.config.backbone.arch].channels[s] for s in self.config.backbone.stages)
        return features + (1 if kind == "patchcore" else 0)

    @property
    def has_prior(self) -> bool:
        return self.config.kind == "patchcore"

    def fit(self, normal_uint8: np.ndarray, seed: int, keep_ids: list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        """Load the backbone; for `patchcore`, fit the prior on `normal_uint8` and standardise its maps
        on the first 32 of them (distances of training images are optimistic, but set a sensible
        scale). Returns the context (float16) of normal_uint8[keep_ids]: every image passes through
        the backbone once, the prior's fit, its standardisation and the kept context share that pass."""
        kind = self.config.kind
        keep_ids = [int(i) for i in keep_ids]
        if kind in ("none", "image"):
            return self.encode_uint8(normal_uint8[keep_ids])
        self.extractor = build_feature_extractor(self._extractor_config(), seed=seed, option="model.context.backbone")
        if kind != "patchcore":
            return self.encode_uint8(normal_uint8[keep_ids])
        reference_ids = list(range(min(REFERENCE_IMAGES, len(normal_uint8))))
        wanted = set(keep_ids) | set(reference_ids)
        kept: dict[int, dict[int, torch.Tensor]] = {}
        seen = 0

        def extract(images: torch.Tensor) -> list[torch.Tensor]:
            nonlocal seen
            levels = self._levels(images)
            for offset in range(len(images)):
                if seen + offset in wanted:
                    kept[seen + offset] = {stage: level[offset : offset + 1].clone() for stage, level in levels.items()}
            seen += len(images)
            return [levels[stage] for stage in sorted(self.config.prior_stages)]

        def levels_of(ids: list[int]) -> dict[int, torch.Tensor]:
            return {stage: torch.cat([kept[i][stage] for i in ids]) for stage in self.extractor.stages}

        size = tuple(normal_uint8.shape[-2:])
        cfg = PatchCoreConfig(
            image_size=normal_uint8.shape[-1],
            backbone=BackboneConfig(weights=self.config.backbone.weights, arch=self.config.backbone.arch,
                                    stages=list(self.config.prior_stages), micro_batch=self.config.backbone.micro_batch),
            coreset_ratio=self.config.prior_coreset_ratio,
            max_patches=self.config.prior_max_patches,
        )
        self.prior = PatchCore(cfg)
        self.prior.fit_from_levels(normal_uint8, extract, seed)
        with torch.no_grad():
            maps = self._prior_maps(levels_of(reference_ids), size)
            self.prior_mean = float(maps.mean())
            self.prior_std = float(maps.std().clamp_min(1e-6))
            if not keep_ids:
                return torch.zeros(0, self.channels, self.grid, self.grid, dtype=torch.float16)
            return self._assemble(levels_of(keep_ids), size).half()

    def _extractor_config(self) -> BackboneConfig:
        """One backbone pass serves the context features and the prior (the union of their stages)."""
        stages = set(self.config.backbone.stages)
        if self.config.kind == "patchcore":
            stages |= set(self.config.prior_stages)
        return BackboneConfig(weights=self.config.backbone.weights, arch=self.config.backbone.arch, stages=sorted(stages),
                              micro_batch=self.config.backbone.micro_batch)

    def _levels(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        return dict(zip(self.extractor.stages, self.extractor(images)))

    def _prior_maps(self, levels: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The raw prior map of images of `size` from their backbone levels, on the predictor grid:
        PatchCore's map (upsampled to `size` and smoothed) area-resized to the grid, without building
        it at full size."""
        distances = self.prior.distance_grid([levels[s] for s in sorted(self.config.prior_stages)])
        sigma = scaled_sigma(self.prior.config.blur_sigma, size[-1])
        return upsample_and_smooth(distances, size, sigma, shrink_to=(self.grid, self.grid))[:, None]

    def _parts(self, levels: dict[int, torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        """The context channels from backbone levels, in order: each stage's features at its own
        resolution, then the standardised prior on the grid."""
        parts = [levels[s] for s in sorted(self.config.backbone.stages)]
        if self.config.kind == "patchcore":
            parts.append((self._prior_maps(levels, size) - self.prior_mean) / self.prior_std)
        return parts

    def _assemble(self, levels: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The context channels from backbone levels: features on the grid, then the standardised prior."""
        return torch.cat([to_grid(part, self.grid) for part in self._parts(levels, size)], dim=1)

    @torch.no_grad()
    def parts(self, images: torch.Tensor) -> list[torch.Tensor]:
        """`self(images)` before its channels are brought to the grid and joined: a list of
        (B, c_i, h_i, w_i) whose `to_grid` images, concatenated, are `self(images)`. The resize to
        the grid is linear, so a head that projects each part first (`InferenceHead.from_parts`)
        resizes a few projected channels instead of every feature channel."""
        if self.config.kind in ("none", "image"):
            return [self(images)]
        return self._parts(self._levels(images), tuple(images.shape[-2:]))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        kind = self.config.kind
        batch = images.shape[0]
        if kind == "none":
            return torch.zeros(batch, 0, self.grid, self.grid)
        if kind == "image":
            return area_resize(grey(images), (self.grid, self.grid))
        return self._assemble(self._levels(images), tuple(images.shape[-2:]))

    def encode_uint8(self, images_uint8: np.ndarray, chunk: int = 16) -> torch.Tensor:
        """Context of many uint8 images, stored as float16 (bounded memory)."""
        parts = [self(FitData.to_tensor(images_uint8[i : i + chunk])).half() for i in range(0, len(images_uint8), chunk)]
        if not parts:
            return torch.zeros(0, self.channels, self.grid, self.grid, dtype=torch.float16)
        return torch.cat(parts)

    def state_dict(self) -> dict:
        state: dict = {"prior_mean": self.prior_mean, "prior_std": self.prior_std}
        if self.extractor is not None:
            state["backbone"] = self.extractor.weights_state()
        if self.prior is not None:
            state["prior"] = self.prior.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.prior_mean = float(state.get("prior_mean", 0.0))
        self.prior_std = float(state.get("prior_std", 1.0))
        if "backbone" in state:
            self.extractor = FeatureExtractor.from_weights_state(
                self._extractor_config().stages, state["backbone"], self.config.backbone.micro_batch
            )
        if "prior" in state:
            self.prior = PatchCore(
                PatchCoreConfig(backbone=BackboneConfig(stages=list(self.config.prior_stages), micro_batch=self.config.backbone.micro_batch))
            )
            self.prior.load_state_dict(state["prior"])
