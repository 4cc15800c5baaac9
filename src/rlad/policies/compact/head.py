"""The trainable part of the compact grounder: comparison fusion, presence and coordinate heads."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlad.policies.compact.config import CompactConfig
from rlad.policies.compact.features import HANDCRAFTED_PER_STAGE

NEG = -1e9  # "impossible" logit; finite so masked positions never produce inf/nan in the loss


def _profile_head(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(2 * width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, width, 3, padding=1),
                         nn.ReLU(), nn.Conv1d(width, 2, 3, padding=1))


class CompactHead(nn.Module):
    """The trainable part: comparison fusion, presence and coordinate heads."""

    def __init__(self, channels: Sequence[int], cfg: CompactConfig):
        super().__init__()
        self.grid, self.bins = cfg.grid, cfg.bins
        n_fixed = HANDCRAFTED_PER_STAGE * len(channels)
        width = cfg.width
        self.project = nn.ModuleList(nn.Conv2d(c, cfg.project, 1) for c in channels) if cfg.project else nn.ModuleList()
        in_channels = 2 * cfg.project * len(self.project) + n_fixed + 2
        self.fuse = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )
        self.presence = nn.Sequential(nn.Linear(2 * width + 2 * n_fixed, width), nn.ReLU(), nn.Linear(width, 2))
        self.x_head = _profile_head(width)
        self.y_head = _profile_head(width)
        self.width_bias = nn.Parameter(torch.zeros(cfg.bins))
        self.height_bias = nn.Parameter(torch.zeros(cfg.bins))
        coords = torch.linspace(-1.0, 1.0, cfg.grid)
        self.register_buffer("coords", torch.stack(torch.meshgrid(coords, coords, indexing="ij")), persistent=False)

    def encode(self, query: list[torch.Tensor], reference: list[torch.Tensor], fixed: torch.Tensor):
        """-> fused map (B, W, G, G), presence logits (B, 2), x start/end logits (B, 2, bins)."""
        parts = []
        for proj, q, r in zip(self.project, query, reference):
            pq, pr = proj(q), proj(r)
            both = torch.cat([(pq - pr).abs(), pq * pr], dim=1)
            if both.shape[-1] != self.grid:
                both = F.interpolate(both, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
            parts.append(both)
        batch = fixed.shape[0]
        parts += [fixed, self.coords.expand(batch, -1, -1, -1)]
        fused = self.fuse(torch.cat(parts, dim=1))
        pooled = torch.cat([fused.amax(dim=(2, 3)), fused.mean(dim=(2, 3)),
                            fixed.amax(dim=(2, 3)), fixed.mean(dim=(2, 3))], dim=1)
        profile = torch.cat([fused.amax(dim=2), fused.mean(dim=2)], dim=1)  # over rows: (B, 2W, G cols)
        return fused, self.presence(pooled), self._to_bins(self.x_head(profile))

    def _to_bins(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] == self.bins:
            return logits
        return F.interpolate(logits, size=self.bins, mode="linear", align_corners=False)

    def column_mask(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """(N, G) bool: grid columns whose centre lies inside bins x1..x2 (at least one column)."""
        centres = (torch.arange(self.grid, dtype=torch.float32) + 0.5) / self.grid
        lo, hi = x1.float()[:, None] / self.bins, (x2.float()[:, None] + 1) / self.bins
        mask = (centres[None] >= lo) & (centres[None] <= hi)
        middle = ((lo + hi) / 2 * self.grid).long().clamp(0, self.grid - 1)
        return mask | F.one_hot(middle[:, 0], self.grid).bool()

    def y_logits(self, fused: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Row profile of `fused` (N, W, G, G) over the chosen columns -> y start/end logits (N, 2, bins)."""
        cols = self.column_mask(x1, x2)[:, None, None, :]
        count = cols.sum(-1).clamp_min(1)
        masked_max = torch.where(cols, fused, torch.full_like(fused, NEG)).amax(-1)
        masked_mean = (fused * cols).sum(-1) / count
        return self._to_bins(self.y_head(torch.cat([masked_max, masked_mean], dim=1)))


def end_logits(end: torch.Tensor, start_token: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """End logits given the start bin: impossible before it, plus a learned bias per extent."""
    bins = end.shape[-1]
    offset = torch.arange(bins)[None, :] - start_token[:, None]
    extent_bias = bias[offset.clamp(0, bins - 1)]
    return torch.where(offset >= 0, end + extent_bias, torch.full_like(end, NEG))
