"""The sampler's fused prior: where in an image the autoencoder should look next.

min-max of 0.7 z(AE error) + 0.1 z(local variance) + 0.2 z(Sobel magnitude of the blurred grey
image), each term standardised per image (the paper's weighting, docs/nbs.md "The sampler"). The
structure term is also what R_struct averages over a patch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlad.models.maps import gaussian_blur, grey

STRUCTURE_BLUR_SIGMA = 1.0


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
    """Scale each (1, H, W) map of a (B, 1, H, W) batch to [0, 1] on its own."""
    flat = maps.flatten(1)
    low = flat.amin(1).view(-1, 1, 1, 1)
    high = flat.amax(1).view(-1, 1, 1, 1)
    return (maps - low) / (high - low + 1e-12)


def structure_map(images: torch.Tensor) -> torch.Tensor:
    """Sobel magnitude of the blurred grey image (B, 1, H, W): what R_struct averages over a patch.
    Blurred with replicate padding (the anomaly maps use reflect; this map always used replicate)."""
    return sobel_magnitude(gaussian_blur(grey(images), STRUCTURE_BLUR_SIGMA, padding="replicate"))


def fuse_prior_terms(error_z: torch.Tensor, variance_z: torch.Tensor, structure_z: torch.Tensor) -> torch.Tensor:
    """The paper's weighting of the standardised prior terms (before the min-max scaling)."""
    return 0.7 * error_z + 0.1 * variance_z + 0.2 * structure_z


def fused_prior(ae_error: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The fused prior over whole images (B, 1, H, W). Training computes it per state crop instead
    (`sampler.EpisodeRunner.states`); this whole-image form is its reference."""
    return minmax(fuse_prior_terms(zscore(ae_error), zscore(local_variance(grey(images))), zscore(structure_map(images))))
