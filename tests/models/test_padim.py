from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from rlad.errors import ConfigError
from rlad.models.backbones import BackboneConfig
from rlad.models.base import FitData
from rlad.models.padim import OnlineGaussian, PaDiM, PaDiMConfig, mahalanobis, padim_embedding, select_channels

SIZE = 64


def test_online_covariance_equals_numpy_per_position():
    rng = np.random.default_rng(0)
    # Offset far from zero: a naive sum-of-squares accumulator loses precision here, the merge must not.
    data = rng.normal(1000.0, 2.0, size=(23, 5, 4)) + rng.normal(0, 1, size=(1, 5, 4))
    stats = OnlineGaussian(positions=5, channels=4, scatter_dtype=torch.float64, chunk=2)
    for lo, hi in [(0, 1), (1, 8), (8, 9), (9, 23)]:  # uneven batches, one of a single sample
        stats.update(torch.from_numpy(data[lo:hi]))
    assert stats.count == 23
    for p in range(5):
        np.testing.assert_allclose(stats.mean[p].numpy(), data[:, p].mean(0), rtol=1e-12)
        np.testing.assert_allclose(stats.covariance()[p].numpy(), np.cov(data[:, p], rowvar=False), rtol=1e-8, atol=1e-10)


def test_online_covariance_float32_scatter_is_close():
    rng = np.random.default_rng(1)
    data = rng.normal(3.0, 1.5, size=(40, 3, 6)).astype(np.float32)
    stats = OnlineGaussian(positions=3, channels=6)
    for lo in range(0, 40, 7):
        stats.update(torch.from_numpy(data[lo : lo + 7]))
    for p in range(3):
        np.testing.assert_allclose(stats.covariance()[p].numpy(), np.cov(data[:, p].astype(np.float64), rowvar=False), atol=1e-4)


def test_select_channels_is_seeded_sorted_and_distinct():
    a = select_channels(152, 100, seed=0)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and torch.equal(a, a.sort().values)
    assert torch.equal(a, select_channels(152, 100, seed=0))
    assert not torch.equal(a, select_channels(152, 100, seed=1))
    assert torch.equal(select_channels(10, 100, seed=0), torch.arange(10))


def test_padim_embedding_picks_channels_across_levels():
    fine = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    coarse = 100 + torch.arange(3 * 2 * 2, dtype=torch.float32).view(1, 3, 2, 2)
    out = padim_embedding([fine, coarse], torch.tensor([1, 3]))
    assert out.shape == (1, 2, 4, 4)
    assert torch.equal(out[0, 0], fine[0, 1])
    # channel 3 = coarse channel 1, upsampled by nearest neighbour
    assert torch.equal(out[0, 1], coarse[0, 1].repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_mahalanobis_matches_explicit_formula():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4, 5))
    mean = rng.normal(size=(4, 5))
    a = rng.normal(size=(4, 5, 5))
    precision = a @ a.transpose(0, 2, 1) + np.eye(5)
    got = mahalanobis(torch.from_numpy(x), torch.from_numpy(mean), torch.from_numpy(precision)).numpy()
    for b in range(3):
        for p in range(4):
            d = x[b, p] - mean[p]
            assert got[b, p] == pytest.approx(np.sqrt(d @ precision[p] @ d), rel=1e-10)


def _textures(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    base = 128 + 40 * np.sin(cols / 4.0) * np.cos(rows / 6.0)
    images = base[None, None] + rng.normal(0, 5, size=(n, 3, SIZE, SIZE))
    return np.clip(images, 0, 255).astype(np.uint8)


def _fit(images: np.ndarray, **overrides) -> PaDiM:
    overrides.setdefault("backbone", BackboneConfig(weights="random", stages=[1, 2, 4]))
    model = PaDiM(PaDiMConfig(image_size=SIZE, **overrides))
    data = FitData(images, np.zeros((0, 3, SIZE, SIZE), np.uint8), np.zeros((0, SIZE, SIZE), np.uint8), seed=0)
    model.fit(data)
    return model


def test_fit_matches_a_batch_computation_of_the_gaussians():
    images = _textures(9, 0)
    model = _fit(images, n_features=20, extract_batch=4)
    with torch.no_grad():
        embeddings, _ = model._embed(FitData.to_tensor(images))
    e = embeddings.double().numpy()  # (N, Pos, C)
    np.testing.assert_allclose(model.mean.numpy(), e.mean(0), rtol=1e-4, atol=1e-4)
    p = 7
    covariance = np.cov(e[:, p], rowvar=False) + 0.01 * np.eye(20)
    np.testing.assert_allclose(model.precision[p].double().numpy() @ covariance, np.eye(20), atol=2e-3)


def test_anomaly_scores_higher_and_state_round_trip():
    model = _fit(_textures(8, 0))
    assert model.precision.shape == ((SIZE // 4) ** 2, 100, 100)
    normal = FitData.to_tensor(_textures(2, 1))
    defect_images = _textures(2, 2)
    defect_images[:, :, 20:34, 24:38] = 10
    defective = FitData.to_tensor(defect_images)
    pred_normal, pred_defect = model.predict(normal), model.predict(defective)
    assert pred_defect.scores.min() > pred_normal.scores.max()
    assert pred_defect.maps[:, 20:34, 24:38].mean() > 2 * pred_defect.maps[:, :, 48:].mean()

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = PaDiM(model.config)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    again = restored.predict(defective)
    assert np.array_equal(again.maps, pred_defect.maps) and np.array_equal(again.scores, pred_defect.scores)


def test_config_and_data_errors():
    with pytest.raises(ConfigError, match="n_features"):
        PaDiM(PaDiMConfig(n_features=0))
    with pytest.raises(ConfigError, match="regularization"):
        PaDiM(PaDiMConfig(regularization=0))
    with pytest.raises(ConfigError, match="at least 2 training images"):
        _fit(_textures(1, 0))
