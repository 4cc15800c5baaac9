"""PatchCore (Roth et al., CVPR 2022) on the MobileNetV2 backbone, built to stay fast and bounded on CPU.

Pipeline: locally aware patch features from two backbone levels (3x3 average pooling of each, the
deeper level upsampled bilinearly to the shallower grid, concatenated) -> a memory bank chosen by
greedy k-center coreset subsampling -> at test time the distance of every patch to its nearest bank
entry, upsampled to the image and Gaussian-smoothed (sigma 4 at 256 px, as anomalib); image score =
the largest patch distance, or the paper's reweighted score (`reweight: true`).

What keeps it bounded (the deviations from the reference implementation, see docs/methods.md):
- patch features go straight into one preallocated buffer of at most `max_patches` rows; when the
  training set has more patches than that, a uniform random subset of patch positions (drawn before
  extraction) is kept, so memory does not grow with the number of training images;
- the greedy coreset runs on a random projection (`projection_dim`) of the capped pool, evaluated
  lazily in blocks of rows (`rlad.models.coreset`: the plain algorithm's picks, as matrix products);
- nearest-neighbour search (`rlad.models.nearest.BankSearch`) runs in chunks of queries whose
  distance block stays within `knn_chunk_mb` (by default sized to the CPU's last-level cache); on
  CPUs with bf16 matrix units a bf16 screen leaves only a few bank slices per query to measure in
  fp32, with the same neighbours as a full fp32 search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from rlad.config import raise_if_problems
from rlad.engine import progress
from rlad.errors import ConfigError
from rlad.models.backbones import BackboneConfig, FeatureExtractor, build_feature_extractor
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.coreset import greedy_coreset, random_projection
from rlad.models.maps import scaled_sigma, upsample_and_smooth
from rlad.models.nearest import SCREENS, BankSearch


@dataclass
class PatchCoreConfig:
    image_size: int = 256
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(stages=[2, 4]))
    coreset_ratio: float = 0.1
    """Share of the (pooled) training patches kept in the memory bank."""
    max_patches: int = 100_000
    """Cap on training patches held for the coreset; above it a uniform random subset is used."""
    projection_dim: int = 64
    """Random projection size for coreset distances only (0 = use the full features)."""
    blur_sigma: float = 4.0
    """Gaussian smoothing of the map, in pixels at 256 px (scaled with image_size)."""
    reweight: bool = False
    """The paper's image score reweighting by the nearest bank entry's neighbourhood (else: max)."""
    reweight_neighbors: int = 9
    knn_chunk_mb: float = 0.0
    """Upper bound on the query x bank distance block of the fp32 search, in MB; 0 = sized to the CPU's
    last-level cache (`nearest.distance_block_mb`). Speed only: the neighbours do not depend on it."""
    knn_screen: str = "auto"
    """Nearest-neighbour search route, same neighbours either way (rlad.models.nearest): bf16 (a bf16
    screen, then fp32 on what it cannot rule out; fast on CPUs with AMX/AVX512-BF16), fp32, or auto
    (bf16 where the CPU has bf16 units)."""
    extract_batch: int = 8
    """Images per feature-extraction step during fit."""

    def validate(self) -> "PatchCoreConfig":
        problems = []
        if not 0 < self.coreset_ratio <= 1:
            problems.append(f"model.coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if len(self.backbone.stages) < 1:
            problems.append("model.backbone.stages: give at least one stage")
        for name in ("max_patches", "extract_batch", "reweight_neighbors"):
            if getattr(self, name) < 1:
                problems.append(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.knn_screen not in SCREENS:
            problems.append(f"model.knn_screen must be one of {', '.join(SCREENS)}, got {self.knn_screen!r}")
        if self.knn_chunk_mb < 0:
            problems.append(f"model.knn_chunk_mb must be >= 0 (0 = sized to the CPU's cache), got {self.knn_chunk_mb}")
        if self.projection_dim < 0:
            problems.append(f"model.projection_dim must be >= 0 (0 = no projection), got {self.projection_dim}")
        if self.blur_sigma < 0:
            problems.append(f"model.blur_sigma must be >= 0, got {self.blur_sigma}")
        raise_if_problems(problems)
        return self


# --- features -----------------------------------------------------------------------------------


def locally_aware_features(levels: list[torch.Tensor]) -> torch.Tensor:
    """(B, sum C, H0, W0): each level 3x3-averaged (stride 1), deeper ones resized to the first grid."""
    pooled = [F.avg_pool2d(level, 3, stride=1, padding=1) for level in levels]
    grid = pooled[0].shape[-2:]
    resized = [pooled[0]] + [
        p if p.shape[-2:] == grid else F.interpolate(p, size=grid, mode="bilinear", align_corners=False)
        for p in pooled[1:]
    ]
    return torch.cat(resized, dim=1)


# --- nearest neighbours -------------------------------------------------------------------------


def nearest_neighbors(
    queries: torch.Tensor, bank: torch.Tensor, chunk_mb: float = 0.0, screen: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance of each query row to its nearest bank row, and that row's index (one-off
    searches; a fitted model keeps its `BankSearch`)."""
    distances, indices = BankSearch(bank, screen, chunk_mb).search(queries, with_index=True)
    return distances, indices


def reweighted_scores(
    patch_scores: torch.Tensor,
    nn_index: torch.Tensor,
    patches: torch.Tensor,
    bank: torch.Tensor,
    bank_sq_norms: torch.Tensor,
    neighbors: int,
) -> torch.Tensor:
    """The paper's image score (eq. 7): the max patch distance s*, damped when the nearest bank entry
    m* sits in a dense neighbourhood: s = (1 - softmax(||m_test - N_b(m*)||)[m*]) * s*.

    patch_scores/nn_index: (B, P); patches: (B, P, D).
    """
    batch = torch.arange(patch_scores.shape[0])
    worst = patch_scores.argmax(1)
    s_star = patch_scores[batch, worst]
    m_test = patches[batch, worst]  # (B, D)
    m_star = bank[nn_index[batch, worst]]  # (B, D)
    k = min(neighbors, bank.shape[0])
    d_star = torch.addmm(bank_sq_norms.unsqueeze(0), m_star, bank.t(), beta=1.0, alpha=-2.0)
    support = d_star.topk(k, dim=1, largest=False).indices  # (B, k); m* itself comes first
    to_support = torch.linalg.vector_norm(bank[support] - m_test.unsqueeze(1), dim=2)  # (B, k)
    weights = 1.0 - torch.softmax(to_support, dim=1)[:, 0]
    return weights * s_star


# --- the model ----------------------------------------------------------------------------------


class PatchCore(AnomalyModel):
    name = "patchcore"
    Config = PatchCoreConfig

    def __init__(self, config: PatchCoreConfig):
        super().__init__(config)
        self.extractor: FeatureExtractor | None = None
        self.memory_bank: torch.Tensor | None = None
        self.search: BankSearch | None = None
        self.fit_info: dict = {}

    # -- fit --
    def fit(self, data: FitData, run=None) -> None:
        if len(data.normal) == 0:
            raise ConfigError("patchcore: no training images")
        self.extractor = build_feature_extractor(self.config.backbone, seed=data.seed)
        self.fit_from_levels(data.normal, self.extractor, data.seed, run)

    def fit_from_levels(self, normal_uint8: np.ndarray, extract, seed: int, run=None) -> None:
        """The memory bank of `normal_uint8`, whose backbone levels (this model's stages, in order)
        `extract(float images)` gives, batch after batch in order: a model that runs the backbone for
        other outputs as well (NBS's context) fits its prior from the same pass."""
        cfg = self.config
        rng = np.random.default_rng(seed)
        n_images = len(normal_uint8)
        pool: torch.Tensor | None = None  # allocated once its size is known, after the first batch
        keep = None
        filled = 0
        bar = progress(total=n_images, desc="patchcore features")
        with torch.inference_mode():
            for start in range(0, n_images, cfg.extract_batch):
                stop = min(n_images, start + cfg.extract_batch)
                patches = self._embed_levels(extract(FitData.to_tensor(normal_uint8[start:stop])))[0]
                per_image, dim = patches.shape[1], patches.shape[2]
                rows = patches.reshape(-1, dim)
                if pool is None:
                    total = n_images * per_image
                    pool_size = min(total, cfg.max_patches)
                    # The kept patch rows are drawn before they are seen, so the buffer has its final size.
                    keep = np.sort(rng.choice(total, size=pool_size, replace=False)) if pool_size < total else None
                    pool = torch.empty(pool_size, dim)
                if keep is None:
                    chosen = rows
                else:
                    lo, hi = np.searchsorted(keep, [start * per_image, stop * per_image])
                    chosen = rows[torch.from_numpy(keep[lo:hi] - start * per_image)]
                pool[filled : filled + len(chosen)] = chosen
                filled += len(chosen)
                bar.update(stop - start)
        bar.close()

        count = max(1, int(math.ceil(cfg.coreset_ratio * pool_size)))
        if cfg.projection_dim and cfg.projection_dim < dim:
            reduced = pool @ random_projection(dim, cfg.projection_dim, seed)
        else:
            reduced = pool
        start_row = int(rng.integers(pool_size))
        with torch.inference_mode():
            chosen = greedy_coreset(reduced, count, start=start_row, show_progress=True)
        del reduced
        self._set_bank(pool[chosen].clone())
        self.fit_info = {"training_patches": total, "pooled_patches": pool_size, "memory_bank": count, "dim": dim}
        if run is not None:
            run.log({"event": "patchcore_bank", **self.fit_info})

    def _set_bank(self, bank: torch.Tensor) -> None:
        self.memory_bank = bank.float().contiguous()
        self.search = BankSearch(self.memory_bank, self.config.knn_screen, self.config.knn_chunk_mb)

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, P, D) patch features of float images (B, 3, S, S), and the patch grid (H, W)."""
        return self._embed_levels(self.extractor(images))

    @staticmethod
    def _embed_levels(levels: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[int, int]]:
        features = locally_aware_features(levels)
        b, d, h, w = features.shape
        return features.permute(0, 2, 3, 1).reshape(b, h * w, d), (h, w)

    # -- predict --
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> AnomalyMap:
        if self.memory_bank is None or self.extractor is None:
            raise RuntimeError("PatchCore.predict before fit/load_state_dict")
        images = images.float()
        return self.predict_from_levels(self.extractor(images), tuple(images.shape[-2:]))

    @torch.no_grad()
    def distance_grid(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """(B, h, w): each patch's distance to its nearest bank row, from backbone features computed
        elsewhere (one per configured stage, in order): the map before upsampling and smoothing."""
        patches, (h, w) = self._embed_levels(levels)
        distances, _ = self.search.search(patches.reshape(-1, patches.shape[-1]))
        return distances.view(-1, h, w)

    @torch.no_grad()
    def predict_from_levels(self, levels: list[torch.Tensor], size_hw: tuple[int, int]) -> AnomalyMap:
        """`predict` from backbone features computed elsewhere (one per configured stage, in order):
        lets a model that already ran the backbone reuse its pass."""
        patches, (h, w) = self._embed_levels(levels)
        b, p, d = patches.shape
        distances, nn_index = self.search.search(patches.reshape(-1, d), with_index=self.config.reweight)
        patch_scores = distances.view(b, p)
        sigma = scaled_sigma(self.config.blur_sigma, size_hw[-1])
        maps = upsample_and_smooth(patch_scores.view(b, h, w), tuple(size_hw), sigma)
        if self.config.reweight:
            scores = reweighted_scores(
                patch_scores, nn_index.view(b, p), patches, self.memory_bank, self.search.sq_norms,
                self.config.reweight_neighbors,
            )
        else:
            scores = patch_scores.amax(1)
        return AnomalyMap(maps.numpy(), scores.numpy())

    # -- state --
    def state_dict(self) -> dict:
        state = {"memory_bank": self.memory_bank, "fit_info": dict(self.fit_info)}
        if self.extractor is not None:  # None when fitted from another model's backbone pass
            state["backbone"] = self.extractor.weights_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.extractor = None
        if "backbone" in state:
            self.extractor = FeatureExtractor.from_weights_state(
                self.config.backbone.stages, state["backbone"], self.config.backbone.micro_batch
            )
        self._set_bank(state["memory_bank"])
        self.fit_info = dict(state.get("fit_info", {}))

