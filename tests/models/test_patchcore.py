from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from rlad.errors import ConfigError
from rlad.models.backbones import BackboneConfig
from rlad.models.base import FitData
from rlad.models.patchcore import (
    PatchCore,
    PatchCoreConfig,
    locally_aware_features,
    nearest_neighbors,
    reweighted_scores,
)

SIZE = 64


@pytest.mark.parametrize("chunk_mb", [64.0, 0.001])
def test_chunked_nearest_neighbors_equal_brute_force(chunk_mb):
    rng = torch.Generator().manual_seed(2)
    queries = torch.randn(300, 16, generator=rng)
    bank = torch.randn(97, 16, generator=rng)
    distances, indices = nearest_neighbors(queries, bank, chunk_mb=chunk_mb)
    reference = torch.cdist(queries.double(), bank.double())
    want_d, want_i = reference.min(1)
    assert torch.allclose(distances.double(), want_d, atol=1e-4)
    assert torch.equal(indices, want_i)


def test_locally_aware_features_pool_and_align_levels():
    fine = torch.zeros(1, 2, 8, 8)
    fine[0, 0, 4, 4] = 9.0
    coarse = torch.ones(1, 3, 4, 4)
    out = locally_aware_features([fine, coarse])
    assert out.shape == (1, 5, 8, 8)
    # 3x3 average pooling spreads the spike over its neighbourhood (zero padding counts).
    assert float(out[0, 0, 4, 4]) == pytest.approx(1.0)
    assert float(out[0, 0, 3, 3]) == pytest.approx(1.0)
    assert float(out[0, 0, 2, 2]) == 0.0
    assert float(out[0, 2, 4, 4]) == pytest.approx(1.0)  # the coarse level is upsampled to the fine grid


def _textures(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    base = 128 + 40 * np.sin(cols / 4.0) * np.cos(rows / 6.0)
    images = base[None, None] + rng.normal(0, 5, size=(n, 3, SIZE, SIZE))
    return np.clip(images, 0, 255).astype(np.uint8)


def _with_defect(images: np.ndarray) -> np.ndarray:
    out = images.copy()
    out[:, :, 20:34, 24:38] = 10  # a dark square
    return out


def _fit_data(images: np.ndarray) -> FitData:
    size = images.shape[-1]
    return FitData(images, np.zeros((0, 3, size, size), np.uint8), np.zeros((0, size, size), np.uint8), seed=0)


def _model(**overrides) -> PatchCore:
    overrides.setdefault("backbone", BackboneConfig(weights="random", stages=[2, 4]))
    config = PatchCoreConfig(image_size=SIZE, **overrides)
    return PatchCore(config)


def _fit(model: PatchCore, images: np.ndarray) -> PatchCore:
    model.fit(_fit_data(images))
    return model


def test_fit_bank_size_is_the_coreset_ratio_of_the_patches():
    model = _fit(_model(coreset_ratio=0.25), _textures(4, 0))
    patches = 4 * (SIZE // 8) ** 2  # stage 2 has stride 8
    assert model.fit_info["training_patches"] == patches
    assert model.memory_bank.shape == (math.ceil(0.25 * patches), 32 + 96)


def test_patch_cap_bounds_the_pool_and_the_bank():
    model = _fit(_model(coreset_ratio=0.5, max_patches=100), _textures(4, 0))
    assert model.fit_info["pooled_patches"] == 100
    assert model.memory_bank.shape[0] == 50
    # The bank rows are real patch features of the training images, not averages.
    full = _fit(_model(coreset_ratio=1.0), _textures(4, 0))
    distances, _ = nearest_neighbors(model.memory_bank, full.memory_bank)
    assert float(distances.max()) < 1e-3


def test_anomaly_scores_higher_and_map_peaks_on_the_defect():
    model = _fit(_model(), _textures(6, 0))
    normal = FitData.to_tensor(_textures(2, 1))
    defective = FitData.to_tensor(_with_defect(_textures(2, 2)))
    pred_normal = model.predict(normal)
    pred_defect = model.predict(defective)
    assert pred_normal.maps.shape == (2, SIZE, SIZE)
    assert pred_defect.scores.min() > pred_normal.scores.max()
    inside = pred_defect.maps[:, 20:34, 24:38].mean()
    outside = pred_defect.maps[:, :, 48:].mean()
    assert inside > 2 * outside


def test_state_dict_round_trip_gives_identical_maps():
    model = _fit(_model(reweight=True), _textures(4, 0))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = PatchCore(model.config)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    images = FitData.to_tensor(_with_defect(_textures(2, 3)))
    a, b = model.predict(images), restored.predict(images)
    assert np.array_equal(a.maps, b.maps) and np.array_equal(a.scores, b.scores)


def test_reweighted_score_follows_the_paper_formula():
    rng = torch.Generator().manual_seed(3)
    bank = torch.randn(30, 4, generator=rng)
    patches = torch.randn(2, 5, 4, generator=rng)
    distances, nn_index = nearest_neighbors(patches.reshape(-1, 4), bank)
    scores = reweighted_scores(distances.view(2, 5), nn_index.view(2, 5), patches, bank, bank.square().sum(1), 3)
    for b in range(2):
        worst = int(distances.view(2, 5)[b].argmax())
        m_star = bank[nn_index.view(2, 5)[b, worst]]
        support = torch.cdist(m_star[None], bank)[0].argsort()[:3]
        to_support = torch.cdist(patches[b, worst][None], bank[support])[0]
        weight = 1 - torch.softmax(to_support, 0)[0]
        assert float(scores[b]) == pytest.approx(float(weight * distances.view(2, 5)[b, worst]), rel=1e-4)
        assert 0 < float(scores[b]) < float(distances.view(2, 5)[b].max())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"coreset_ratio": 0.0}, "coreset_ratio"),
        ({"coreset_ratio": 1.5}, "coreset_ratio"),
        ({"max_patches": 0}, "max_patches"),
        ({"projection_dim": -1}, "projection_dim"),
        ({"knn_chunk_mb": -1.0}, "knn_chunk_mb"),
        ({"backbone": BackboneConfig(stages=[])}, "stages"),
    ],
)
def test_bad_config_values_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        PatchCore(PatchCoreConfig(**overrides))
