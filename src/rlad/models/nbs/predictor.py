"""The predictor: per-pixel defect probability from the loss profile (plus optional extra channels).

Paper: dilated 3x3 convolutions (dilation 1, 2, 4, 8; 10 -> 32 -> 16 -> 8 -> 4 channels, BatchNorm +
LeakyReLU), a 1x1 convolution and a sigmoid, trained with an alpha-weighted BCE whose weight on the
normal pixels is annealed from 1 to 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Predictor(nn.Module):
    """Returns logits (B, 1, H, W); `torch.sigmoid` of them is the defect probability."""

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...] = (32, 16, 8, 4),
        dilations: tuple[int, ...] = (1, 2, 4, 8),
    ):
        super().__init__()
        if len(widths) != len(dilations):
            raise ValueError(f"predictor widths {widths} and dilations {dilations} differ in length")
        layers: list[nn.Module] = []
        previous = in_channels
        for channels, dilation in zip(widths, dilations):
            layers += [
                nn.Conv2d(previous, channels, 3, padding=dilation, dilation=dilation, padding_mode="replicate"),
                nn.BatchNorm2d(channels),
                nn.LeakyReLU(0.2),
            ]
            previous = channels
        layers.append(nn.Conv2d(previous, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """`-mean(y log p + alpha (1 - y) log(1 - p))` with p = sigmoid(logits), computed stably.

    Targets may be soft (area-downsampled masks)."""
    positive = target * F.softplus(-logits)  # -y log p
    negative = (1.0 - target) * F.softplus(logits)  # -(1 - y) log(1 - p)
    return (positive + alpha * negative).mean()


def random_crops(tensors: list[torch.Tensor], size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The same random size x size window cut from each (B, C, H, W) tensor (one window per item)."""
    height, width = tensors[0].shape[-2:]
    if size >= height and size >= width:
        return tensors
    size_h, size_w = min(size, height), min(size, width)
    batch = tensors[0].shape[0]
    tops = torch.randint(0, height - size_h + 1, (batch,), generator=generator)
    lefts = torch.randint(0, width - size_w + 1, (batch,), generator=generator)
    out = []
    for tensor in tensors:
        out.append(
            torch.stack([tensor[i, :, t : t + size_h, l : l + size_w] for i, (t, l) in enumerate(zip(tops.tolist(), lefts.tolist()))])
        )
    return out
