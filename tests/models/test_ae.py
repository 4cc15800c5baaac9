from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from rlad.engine import RunDir
from rlad.errors import ConfigError
from rlad.models.ae import AEConfig, AutoencoderBaseline, random_batch, reconstruction_error_map
from rlad.models.base import FitData

SIZE = 64
SMALL = dict(image_size=SIZE, channels=[8, 16, 16], latent_channels=8, batch_size=4, train_crop=32)


def _textures(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    base = 128 + 40 * np.sin(cols / 4.0) * np.cos(rows / 6.0)
    images = base[None, None] + rng.normal(0, 5, size=(n, 3, SIZE, SIZE))
    return np.clip(images, 0, 255).astype(np.uint8)


def _data(n: int = 6) -> FitData:
    return FitData(_textures(n, 0), np.zeros((0, 3, SIZE, SIZE), np.uint8), np.zeros((0, SIZE, SIZE), np.uint8), seed=0)


def test_error_map_is_the_channel_mean_of_squared_error():
    images = torch.zeros(1, 3, 2, 2)
    recon = torch.zeros(1, 3, 2, 2)
    recon[0, 0, 0, 0] = 0.3
    recon[0, :, 1, 1] = 0.5
    out = reconstruction_error_map(images, recon)
    assert out.shape == (1, 1, 2, 2)
    assert float(out[0, 0, 0, 0]) == pytest.approx(0.09 / 3)
    assert float(out[0, 0, 1, 1]) == pytest.approx(0.25)
    assert float(out[0, 0, 0, 1]) == 0.0


def test_random_batch_crops_come_from_the_images():
    images = np.arange(2 * 3 * 8 * 8, dtype=np.uint8).reshape(2, 3, 8, 8)
    batch = random_batch(images, 5, 4, flip=False, rng=np.random.default_rng(0))
    assert batch.shape == (5, 3, 4, 4)
    as_uint8 = (batch * 255).round().to(torch.uint8).numpy()
    for crop in as_uint8:
        found = any(
            np.array_equal(crop, images[i, :, t : t + 4, l : l + 4]) for i in range(2) for t in range(5) for l in range(5)
        )
        assert found


def test_training_lowers_the_loss_and_scores_a_defect_higher():
    model = AutoencoderBaseline(AEConfig(steps=60, lr=3e-3, **SMALL))
    model.fit(_data())
    first, last = np.mean(model.loss_history[:5]), np.mean(model.loss_history[-5:])
    assert last < 0.5 * first
    normal = FitData.to_tensor(_textures(2, 1))
    defect_images = _textures(2, 2)
    defect_images[:, :, 20:34, 24:38] = 0
    pred_normal, pred_defect = model.predict(normal), model.predict(FitData.to_tensor(defect_images))
    assert pred_defect.scores.min() > pred_normal.scores.max()
    assert pred_defect.maps[:, 20:34, 24:38].mean() > 2 * pred_defect.maps[:, :, 48:].mean()


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path):
    straight = AutoencoderBaseline(AEConfig(steps=6, checkpoint_every=3, **SMALL))
    straight.fit(_data(), run=RunDir(tmp_path / "a").create())

    interrupted_dir = RunDir(tmp_path / "b").create()
    AutoencoderBaseline(AEConfig(steps=3, checkpoint_every=3, **SMALL)).fit(_data(), run=interrupted_dir)
    assert interrupted_dir.latest_checkpoint()["step"] == 3
    resumed = AutoencoderBaseline(AEConfig(steps=6, checkpoint_every=3, **SMALL))
    resumed.fit(_data(), run=interrupted_dir)

    assert resumed.loss_history == straight.loss_history
    for key, value in straight.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[key]), key


def test_state_dict_round_trip_gives_identical_maps():
    model = AutoencoderBaseline(AEConfig(steps=3, **SMALL))
    model.fit(_data())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = AutoencoderBaseline(model.config)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    images = FitData.to_tensor(_textures(2, 3))
    a, b = model.predict(images), restored.predict(images)
    assert np.array_equal(a.maps, b.maps) and np.array_equal(a.scores, b.scores)


def test_config_errors():
    with pytest.raises(ConfigError, match="model.steps"):
        AutoencoderBaseline(AEConfig(steps=0))
    with pytest.raises(ConfigError, match="model.channels"):
        AutoencoderBaseline(AEConfig(channels=[]))
    with pytest.raises(ConfigError, match="multiples of 32"):
        # 5 stride-2 levels need sizes divisible by 32
        AutoencoderBaseline(AEConfig(image_size=SIZE, train_crop=48)).fit(_data())
