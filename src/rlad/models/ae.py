"""A plain convolutional autoencoder reconstruction baseline: no RL, no profiles, no pretrained features.

Trained with MSE on the normal images only; the anomaly map is the per-pixel squared reconstruction
error (mean over colour channels), Gaussian-smoothed; image score = the map's maximum. It is the
"reconstruction without any of NBS's machinery" reference point.

The network is fully convolutional (strided 4x4 convs down to 1/32 of the input, a 1x1 bottleneck,
transposed convs back up), so it trains on random crops (`train_crop`, 4x cheaper per sample at 128
than full 256 images on CPU) and is applied to the whole image at test time. Training checkpoints to
the run directory every `checkpoint_every` steps and resumes from the newest checkpoint; each step's
batch is drawn from a generator seeded by (seed, step), so a resumed run sees the same batches as
an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from rlad.config import raise_if_problems
from rlad.engine import TrainingState, progress
from rlad.errors import ConfigError
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.maps import gaussian_blur, scaled_sigma


@dataclass
class AEConfig:
    image_size: int = 256
    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 128, 128])
    """Encoder widths, one per stride-2 level (the decoder mirrors them)."""
    latent_channels: int = 32
    """Bottleneck channels at 1/2^len(channels) resolution."""
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    train_crop: int = 128
    """Random square crop size for training (0 = whole images); must be a multiple of 2^len(channels)."""
    flip: bool = False
    """Random horizontal/vertical flips while training (only for products that are flip-invariant)."""
    blur_sigma: float = 4.0
    """Gaussian smoothing of the error map, in pixels at 256 px (scaled with image_size)."""
    checkpoint_every: int = 250

    def validate(self) -> "AEConfig":
        problems = []
        if not self.channels or any(int(c) < 1 for c in self.channels):
            problems.append(f"model.channels must be a non-empty list of positive widths, got {self.channels}")
        for name in ("latent_channels", "steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            problems.append(f"model.lr must be > 0, got {self.lr}")
        if self.train_crop < 0:
            problems.append(f"model.train_crop must be >= 0 (0 = whole images), got {self.train_crop}")
        if self.blur_sigma < 0:
            problems.append(f"model.blur_sigma must be >= 0, got {self.blur_sigma}")
        raise_if_problems(problems)
        return self


class ConvAutoencoder(nn.Module):
    def __init__(self, channels: list[int], latent_channels: int):
        super().__init__()
        encoder: list[nn.Module] = []
        previous = 3
        for width in channels:
            encoder += [nn.Conv2d(previous, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2, inplace=True)]
            previous = width
        encoder.append(nn.Conv2d(previous, latent_channels, 1))
        decoder: list[nn.Module] = [nn.Conv2d(latent_channels, previous, 1), nn.LeakyReLU(0.2, inplace=True)]
        for width in list(reversed(channels[:-1])) + [channels[0]]:
            decoder += [
                nn.ConvTranspose2d(previous, width, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            previous = width
        decoder += [nn.Conv2d(previous, 3, 3, 1, 1), nn.Sigmoid()]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def random_batch(
    images: np.ndarray, batch_size: int, crop: int, flip: bool, rng: np.random.Generator
) -> torch.Tensor:
    """float (B, 3, crop, crop) in [0, 1]: random images, random crops, optional random flips."""
    picks = rng.integers(0, len(images), size=batch_size)
    size = images.shape[-1]
    out = np.empty((batch_size, 3, crop, crop), dtype=np.uint8)
    for slot, index in enumerate(picks):
        top, left = rng.integers(0, size - crop + 1, size=2)
        patch = images[index, :, top : top + crop, left : left + crop]
        if flip and rng.random() < 0.5:
            patch = patch[:, :, ::-1]
        if flip and rng.random() < 0.5:
            patch = patch[:, ::-1, :]
        out[slot] = patch
    return FitData.to_tensor(out)


def reconstruction_error_map(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W): squared error averaged over colour channels."""
    return (images - reconstructions).square().mean(1, keepdim=True)


class AutoencoderBaseline(AnomalyModel):
    name = "ae"
    Config = AEConfig

    def __init__(self, config: AEConfig):
        super().__init__(config)
        self.network = ConvAutoencoder(list(config.channels), config.latent_channels)
        self.network.eval()
        self.loss_history: list[float] = []

    def fit(self, data: FitData, run=None) -> None:
        cfg = self.config
        size = data.image_size
        crop = min(cfg.train_crop or size, size)
        factor = 2 ** len(cfg.channels)
        if crop % factor or size % factor:
            raise ConfigError(
                f"ae: image_size {size} and train_crop {crop} must be multiples of {factor} (2^len(model.channels))"
            )
        torch.manual_seed(data.seed)
        self.network = ConvAutoencoder(list(cfg.channels), cfg.latent_channels)
        optimiser = torch.optim.Adam(self.network.parameters(), lr=cfg.lr)
        state = TrainingState(run, "ae", network=self.network, optimiser=optimiser)
        saved = state.restore()
        step = int(saved.get("step", 0))
        self.loss_history = list(saved.get("loss_history", []))
        self.network.train()
        bar = progress(total=cfg.steps, desc="ae", initial=step)
        while step < cfg.steps:
            rng = np.random.default_rng([data.seed, step])
            batch = random_batch(data.normal, cfg.batch_size, crop, cfg.flip, rng)
            loss = nn.functional.mse_loss(self.network(batch), batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            loss_value = loss.item()
            self.loss_history.append(loss_value)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.5f}")
            if run is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                state.save(step, step=step, loss_history=self.loss_history)
                run.log({"event": "ae_step", "step": step, "loss": loss_value})
        bar.close()
        self.network.eval()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> AnomalyMap:
        images = images.float()
        self.network.eval()
        errors = reconstruction_error_map(images, self.network(images))
        maps = gaussian_blur(errors, scaled_sigma(self.config.blur_sigma, images.shape[-1]))[:, 0]
        return AnomalyMap(maps.numpy(), maps.flatten(1).amax(1).numpy())

    def state_dict(self) -> dict:
        return {"network": self.network.state_dict(), "loss_history": list(self.loss_history)}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.network.eval()
        self.loss_history = list(state.get("loss_history", []))

