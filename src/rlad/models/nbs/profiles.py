"""Loss profiles and the image maps around them: resizing, the sampler's prior map, and the bank of
autoencoder snapshots that turns any image (seen in training or not) into its loss profile.

A loss profile is the stack of per-pixel reconstruction errors of one image under the autoencoder at
the last `window` steps of a reset cycle. In training those are the live weights; for unseen images the
model keeps the weights of those steps (the snapshots of one cycle) and replays them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from rlad.models.nbs.autoencoder import PatchAutoencoder, error_maps

LOG_EPS = 1e-3  # errors live on [0, 1]; the log spreads the small ones where normal pixels sit


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size): area averaging when shrinking, bilinear when growing."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luminance."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W), replicate-padded."""
    if sigma <= 0:
        return maps
    kernel = _gaussian_kernel(sigma)
    radius = len(kernel) // 2
    out = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def sobel_magnitude(maps: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of (B, 1, H, W) maps with 3x3 Sobel filters (same size out)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)
    grads = F.conv2d(F.pad(maps, (1, 1, 1, 1), mode="replicate"), kernels)
    return grads.pow(2).sum(1, keepdim=True).sqrt()


def local_variance(maps: torch.Tensor, size: int = 7) -> torch.Tensor:
    """Variance in a size x size window around each pixel of (B, 1, H, W)."""
    pad = size // 2
    padded = F.pad(maps, (pad, pad, pad, pad), mode="replicate")
    mean = F.avg_pool2d(padded, size, stride=1)
    mean_sq = F.avg_pool2d(padded * padded, size, stride=1)
    return (mean_sq - mean * mean).clamp_min(0.0)


def zscore(maps: torch.Tensor) -> torch.Tensor:
    """Standardise each (1, H, W) map of a (B, 1, H, W) batch on its own."""
    flat = maps.flatten(1)
    mean = flat.mean(1).view(-1, 1, 1, 1)
    std = flat.std(1, unbiased=False).view(-1, 1, 1, 1)
    return (maps - mean) / (std + 1e-6)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low = flat.min(1).values.view(-1, 1, 1, 1)
    high = flat.max(1).values.view(-1, 1, 1, 1)
    return (maps - low) / (high - low + 1e-12)


def structure_map(images: torch.Tensor) -> torch.Tensor:
    """Sobel magnitude of the blurred grey image (B, 1, H, W): what R_struct averages over a patch."""
    return sobel_magnitude(blur(grey(images), 1.0))


def fuse_prior_terms(error_z: torch.Tensor, variance_z: torch.Tensor, structure_z: torch.Tensor) -> torch.Tensor:
    """The paper's weighting of the standardised prior terms (before the min-max scaling)."""
    return 0.7 * error_z + 0.1 * variance_z + 0.2 * structure_z


def fused_prior(ae_error: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The sampler's prior channel over whole images: min-max of 0.7 z(AE error) + 0.1 z(local variance)
    + 0.2 z(Sobel). (Training computes it per state crop, `sampler.EpisodeRunner.states`.)"""
    return minmax(fuse_prior_terms(zscore(ae_error), zscore(local_variance(grey(images))), zscore(structure_map(images))))


def profile_features(errors: torch.Tensor) -> torch.Tensor:
    """Raw error stack (B, W, H, W) -> predictor input: log errors (scale-free, small values spread)."""
    return torch.log(errors + LOG_EPS)


class SnapshotBank:
    """The autoencoder weights at each profile step of one reset cycle; replaying them on an image
    gives its loss profile exactly as training computed it for the labelled images."""

    def __init__(self, snapshots: list[dict] | None = None, template: PatchAutoencoder | None = None):
        self.snapshots: list[dict] = list(snapshots or [])
        self._template = template
        self._modules: list[PatchAutoencoder] | None = None

    def __len__(self) -> int:
        return len(self.snapshots)

    def add(self, model: PatchAutoencoder) -> None:
        self.snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        self._template = self._template or model
        self._modules = None

    def clear(self) -> None:
        self.snapshots = []
        self._modules = None

    def _built(self) -> list[PatchAutoencoder]:
        if self._modules is None:
            if self._template is None:
                raise RuntimeError("SnapshotBank needs a template autoencoder to rebuild its snapshots")
            modules = []
            for state in self.snapshots:
                module = copy.deepcopy(self._template)
                module.load_state_dict(state)
                module.eval()
                modules.append(module)
            self._modules = modules
        return self._modules

    @torch.no_grad()
    def profile(self, images: torch.Tensor, offsets: tuple[int, ...] = (0,)) -> torch.Tensor:
        """(B, 3, h, w) at the profile resolution -> raw errors (B, len(self), h, w)."""
        return torch.stack([error_maps(m, images, offsets) for m in self._built()], dim=1)
