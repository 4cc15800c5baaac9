"""The predictor as NBS and its supervised control use it: built from the one NBSConfig, and its
logits on the predictor grid turned into the AnomalyMap every model returns.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from rlad.models.backbones import fuse_conv_bn
from rlad.models.base import AnomalyMap
from rlad.models.maps import scaled_sigma, upsample_and_smooth
from rlad.models.nbs.config import NBSConfig
from rlad.models.nbs.context import ContextEncoder, to_grid
from rlad.models.nbs.predictor import Predictor


def new_predictor(cfg: NBSConfig, encoder: ContextEncoder, profile_channels: int, padding: str | None = None) -> Predictor:
    """The predictor over `profile_channels` profile maps (0 for the control) plus the context;
    `padding` overrides the config's (a saved model's own)."""
    return Predictor(
        profile_channels + encoder.channels,
        tuple(cfg.predictor_widths),
        tuple(cfg.predictor_dilations),
        project=cfg.predictor_project,
        dropout=cfg.predictor_dropout,
        prior_residual=encoder.has_prior,
        padding=padding or cfg.predictor_padding,
    )


def seeded_predictor(cfg: NBSConfig, encoder: ContextEncoder, profile_channels: int, seed: int) -> Predictor:
    """`new_predictor` with initial weights drawn from `seed` (the same draw for NBS and the control),
    leaving torch's global stream alone."""
    with torch.random.fork_rng():
        torch.manual_seed(seed + 29)
        return new_predictor(cfg, encoder, profile_channels)


def restore_head(cfg: NBSConfig, state: dict, profile_channels: int) -> tuple[ContextEncoder, Predictor]:
    """The context encoder and the predictor (in eval mode) of a saved model's `state_dict`. The
    padding is the one the model was trained with (`head_state`; models saved before it had
    replicate padding), whatever today's default."""
    encoder = ContextEncoder(cfg.context, cfg.predictor_grid)
    encoder.load_state_dict(state["context"])
    predictor = new_predictor(cfg, encoder, profile_channels, padding=state.get("predictor_padding", "replicate"))
    predictor.load_state_dict(state["predictor"])
    return encoder, predictor.eval()


def head_state(predictor: Predictor, encoder: ContextEncoder) -> dict:
    """The part of a saved model's `state_dict` that `restore_head` reads back."""
    return {"predictor": predictor.state_dict(), "predictor_padding": predictor.padding, "context": encoder.state_dict()}


def predictor_optimizer(cfg: NBSConfig, predictor: Predictor) -> torch.optim.Optimizer:
    return torch.optim.Adam(predictor.parameters(), lr=cfg.predictor_lr, weight_decay=cfg.predictor_weight_decay)


def image_score(prob_maps: torch.Tensor, pool: int) -> torch.Tensor:
    """(B, 1, h, w) probabilities -> (B,) scores: max of the locally averaged map."""
    if pool > 1:
        prob_maps = F.avg_pool2d(prob_maps, pool, stride=1, padding=pool // 2, count_include_pad=False)
    return prob_maps.flatten(1).amax(1)


def probability_maps(logits: torch.Tensor, size: tuple[int, int], score_pool: int, blur_sigma: float = 0.0) -> AnomalyMap:
    """Grid logits -> maps at `size` (upsampled and smoothed by a Gaussian of `blur_sigma` px at
    256 px, as every feature model's maps) and image scores from the grid, before smoothing."""
    probs = torch.sigmoid(logits)
    scores = image_score(probs, score_pool)
    maps = upsample_and_smooth(probs[:, 0], size, scaled_sigma(blur_sigma, size[-1]))
    return AnomalyMap(maps.numpy(), scores.numpy())


def predict_maps(cfg: NBSConfig, predictor: Predictor, features: torch.Tensor, size: tuple[int, int]) -> AnomalyMap:
    """The predictor's maps at inference, ensembled with the prior channel (`prior_boost`)."""
    logits = predictor(features)
    if predictor.prior_residual and cfg.prior_boost:
        logits = logits + cfg.prior_boost * features[:, -1:]
    return probability_maps(logits, size, cfg.score_pool, cfg.blur_sigma)


class InferenceHead:
    """The trained predictor as inference runs it: a copy with every BatchNorm folded into the
    convolution before it and channels-last weights (about 2x faster on CPU than the training
    module in eval mode, same maths), turned into maps by `predict_maps`.

    `from_parts` takes the input as channel groups not yet on the grid (`ContextEncoder.parts`): the
    first layer, a 1 x 1 projection, runs on each group at its own resolution and only its few output
    channels are resized to the grid (a per-pixel linear map commutes with the bilinear resize, whose
    weights sum to one), instead of resizing hundreds of feature channels first."""

    def __init__(self, cfg: NBSConfig, predictor: Predictor):
        self.cfg = cfg
        frozen = copy.deepcopy(predictor).eval()
        frozen.body = fuse_conv_bn(frozen.body)
        self.predictor = frozen.to(memory_format=torch.channels_last)
        for param in self.predictor.parameters():
            param.requires_grad_(False)
        layers = [layer for layer in self.predictor.body if not isinstance(layer, (torch.nn.Dropout2d, torch.nn.Identity))]
        first = layers[0]
        self.projection = first if isinstance(first, torch.nn.Conv2d) and first.kernel_size == (1, 1) and len(layers) > 1 else None
        self.rest = torch.nn.Sequential(*layers[1:]) if self.projection is not None else None

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, size: tuple[int, int]) -> AnomalyMap:
        return predict_maps(self.cfg, self.predictor, features, size)

    @torch.no_grad()
    def from_parts(self, parts: list[torch.Tensor], size: tuple[int, int]) -> AnomalyMap:
        """`self(torch.cat([to_grid(p, grid) for p in parts], 1), size)`, the same maths summed in
        another order; the last part's last channel is the prior where the predictor has one."""
        grid = self.cfg.predictor_grid
        if self.projection is None:
            return self(torch.cat([to_grid(part, grid) for part in parts], dim=1), size)
        weight, start = self.projection.weight, 0
        projected = None
        for part in parts:
            channels = part.shape[1]
            if channels:
                piece = to_grid(F.conv2d(part, weight[:, start : start + channels]), grid)
                projected = piece if projected is None else projected.add_(piece)
            start += channels
        if start != self.projection.in_channels:
            raise ValueError(f"InferenceHead.from_parts: {start} input channels, the predictor takes {self.projection.in_channels}")
        logits = self.rest(projected.add_(self.projection.bias.view(1, -1, 1, 1)))
        predictor = self.predictor
        if predictor.prior_residual:
            prior = to_grid(parts[-1][:, -1:], grid)
            logits = logits + predictor.prior_weight * prior + predictor.prior_bias
            if self.cfg.prior_boost:
                logits = logits + self.cfg.prior_boost * prior
        return probability_maps(logits, size, self.cfg.score_pool, self.cfg.blur_sigma)
