"""Each pixel model's whole inference path as one traceable `torch.nn.Module`, for `rlad export`.

Input: float images (B, 3, H, W) in [0, 1], any batch size and any H x W. Inside: the resize to the
run's square `image_size` (bilinear, antialiased when shrinking: the filter `rlad predict` gets from
PIL), ImageNet normalisation, the backbone, the model's scoring, the smoothing and the run's 0-1
normalisation (`models.postprocess`). Outputs, in this order:

- `maps`: raw anomaly maps (B, S, S), the values `model.predict` gives;
- `scores`: raw image scores (B,);
- `score_maps`: maps on the run's 0-1 scale (0.5 = the pixel threshold);
- `image_scores`: image scores on the 0-1 scale (0.5 = the image threshold).

The modules wrap the models' own pieces (backbone modules, `locally_aware_features`,
`padim_embedding`, `mahalanobis`, the smoothing matrices of `models.maps`, NBS's predictor) and leave
the models alone. Only where a model's fast path cannot be traced is it replaced by the same maths:
PatchCore's nearest-neighbour search (`models.nearest.BankSearch`: chunked loops and, on bf16 CPUs, a
data-dependent screen) becomes one exact fp32 distance block with the same centring, and NBS's
snapshot replay runs each snapshot's own module instead of the stacked copy. One replacement is for
ONNX Runtime's speed: the autoencoder's transposed convolutions run as per-parity convolutions
(`PhaseTransposedConv`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlad.errors import ConfigError
from rlad.models.backbones import batchnorm_affine
from rlad.models.maps import gaussian_kernel, scaled_sigma, smoothing_matrices
from rlad.models.nearest import augmented_bank
from rlad.models.postprocess import PostProcessor

OUTPUTS = ("maps", "scores", "score_maps", "image_scores")


class Normalise(nn.Module):
    """`PostProcessor._normalise` in float32 tensors: linear below the threshold, 1 - 0.5 / (1 + z) above."""

    def __init__(self, low: float, threshold: float):
        super().__init__()
        self.low, self.threshold = float(low), float(threshold)
        self.span = max(self.threshold - self.low, 1e-12)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        z = (values - self.threshold) / self.span
        above = 1.0 - 0.5 / (1.0 + z.clamp_min(0.0))
        return torch.where(z > 0, above, (0.5 * (1.0 + z)).clamp(0.0, 0.5))


class Backbone(nn.Module):
    """A `FeatureExtractor`'s folded modules and taps on a whole batch (its micro-batch loop is a
    speed detail of eager CPU execution; the maths per image is the same)."""

    def __init__(self, extractor):
        super().__init__()
        self.features = extractor.features
        self.taps = dict(extractor._taps)
        self.register_buffer("mean", torch.tensor(extractor.normalise.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(extractor.normalise.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean) / self.std
        out = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.taps:
                out.append(x)
        return out


class Smooth(nn.Module):
    """`models.maps.upsample_and_smooth` for a fixed grid and output size (and `shrink_to`, a square
    grid to area-resize to): A_h @ map @ A_w^T."""

    def __init__(self, grid_hw: tuple[int, int], size: int, sigma: float, shrink_to: int | None = None):
        super().__init__()
        rows, cols = smoothing_matrices(grid_hw, (size, size), sigma, None if shrink_to is None else (shrink_to, shrink_to))
        self.register_buffer("rows", rows.clone())
        self.register_buffer("cols_t", cols.t().contiguous())

    def forward(self, grid_maps: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, grid_maps), self.cols_t)


class Blur(nn.Module):
    """`models.maps.gaussian_blur` (reflect padding) with the kernel as a constant."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = float(sigma)
        kernel = gaussian_kernel(self.sigma) if self.sigma > 0 else torch.ones(1)
        self.radius = len(kernel) // 2
        self.register_buffer("kernel_x", kernel.view(1, 1, 1, -1).clone())
        self.register_buffer("kernel_y", kernel.view(1, 1, -1, 1).clone())

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if self.sigma <= 0:
            return maps
        r = self.radius
        rows = F.conv2d(F.pad(maps, (r, r, 0, 0), mode="reflect"), self.kernel_x)
        return F.conv2d(F.pad(rows, (0, 0, r, r), mode="reflect"), self.kernel_y)


class NearestDistance(nn.Module):
    """Distance of each patch row to its nearest memory-bank row, exact fp32, the expansion
    `BankSearch` uses (rows centred on the bank mean): ||q||^2 + min(||m||^2 - 2 q.m).

    The block ||m||^2 - 2 q.m is one matrix product of [q, 1] with `augmented_bank`'s columns, as in
    `BankSearch`. ONNX Runtime's time here goes to writing and reading that (patches x bank) block, so
    one product that writes it once beats a product plus a scaling and a sum over it (15% of
    PatchCore's whole graph, measured at 1 thread). A screened search (a cheaper lower bound, then the few
    candidates in full) measured slower in ONNX Runtime: its top-k costs more than the block it saves.
    """

    def __init__(self, bank: torch.Tensor):
        super().__init__()
        bank = bank.float()
        mean = bank.mean(0)
        self.register_buffer("bank_mean", mean)
        self.register_buffer("augmented_t", augmented_bank(bank - mean))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> (B, P)."""
        b, p, d = patches.shape
        q = (patches - self.bank_mean).reshape(b * p, d)
        block = torch.matmul(torch.cat([q, torch.ones_like(q[:, :1])], 1), self.augmented_t)
        squared = block.amin(1) + q.square().sum(1)
        return squared.clamp_min(0.0).sqrt().reshape(b, p)


class PixelGraph(nn.Module):
    """Resize in, raw map and score out (a subclass's `raw`), normalised maps and scores beside them."""

    def __init__(self, image_size: int, post: PostProcessor):
        super().__init__()
        self.image_size = int(image_size)
        self.pixel_scale = Normalise(post.pixel_min, post.pixel_threshold)
        self.image_scale = Normalise(post.image_min, post.image_threshold)

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor):
        size = self.image_size
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        maps, scores = self.raw(images)
        return maps, scores, self.pixel_scale(maps), self.image_scale(scores)


class PatchCoreGraph(PixelGraph):
    def __init__(self, model, image_size: int, post: PostProcessor):
        super().__init__(image_size, post)
        from rlad.models.patchcore import locally_aware_features

        if model.config.reweight:
            raise ConfigError("patchcore with model.reweight=true cannot be exported yet (its score gathers the "
                              "nearest bank row's neighbourhood); refit with reweight=false")
        self.backbone = Backbone(model.extractor)
        self.combine = locally_aware_features
        self.nearest = NearestDistance(model.memory_bank)
        grid = _grid(self.backbone, image_size, model.extractor.strides[0])
        self.smooth = Smooth(grid, image_size, scaled_sigma(model.config.blur_sigma, image_size))

    def raw(self, images):
        features = self.combine(self.backbone(images))
        b, d, h, w = features.shape
        patches = features.permute(0, 2, 3, 1).reshape(b, h * w, d)
        patch_scores = self.nearest(patches)
        maps = self.smooth(patch_scores.reshape(b, h, w))
        return maps, patch_scores.amax(1)


class PaDiMGraph(PixelGraph):
    def __init__(self, model, image_size: int, post: PostProcessor):
        super().__init__(image_size, post)
        from rlad.models.padim import mahalanobis

        self.backbone = Backbone(model.extractor)
        self.distance = mahalanobis
        # `padim_embedding` picks each level's channels with a boolean mask (a data-dependent shape the
        # tracer refuses); the same per-level picks, computed once here, are constants of the graph.
        index, offset, self.levels = model.channel_index, 0, []
        for level, channels in enumerate(model.extractor.channels):
            local = index[(index >= offset) & (index < offset + channels)] - offset
            offset += channels
            if len(local):
                self.register_buffer(f"pick_{level}", local.clone())
                self.levels.append(level)
        self.register_buffer("mean", model.mean.float().clone())
        self.register_buffer("precision", model.precision.float().clone())
        grid = _grid(self.backbone, image_size, model.extractor.strides[0])
        self.smooth = Smooth(grid, image_size, scaled_sigma(model.config.blur_sigma, image_size))

    def embed(self, levels: list[torch.Tensor]) -> torch.Tensor:
        grid = levels[0].shape[-2:]
        parts = []
        for level in self.levels:
            picked = levels[level].index_select(1, getattr(self, f"pick_{level}"))
            parts.append(picked if picked.shape[-2:] == grid else F.interpolate(picked, size=grid, mode="nearest"))
        return torch.cat(parts, dim=1)

    def raw(self, images):
        embedding = self.embed(self.backbone(images))
        b, c, h, w = embedding.shape
        distances = self.distance(embedding.permute(0, 2, 3, 1).reshape(b, h * w, c), self.mean, self.precision)
        maps = self.smooth(distances.reshape(b, h, w))
        return maps, maps.flatten(1).amax(1)


class PhaseTransposedConv(nn.Module):
    """A ConvTranspose2d(kernel 4, stride 2, padding 1) as one 2 x 2 convolution whose 4 x C outputs are
    the four output parities (`models.nbs.autoencoder.phase_weight`), interleaved by stacking: the same
    products and sums. A BatchNorm (eval) after it folds into the weights and a LeakyReLU runs before
    the interleave, so ONNX Runtime fuses all three into one convolution. Its ConvTranspose was most of
    the autoencoder graph's time (docs/deploy.md)."""

    def __init__(self, conv: nn.ConvTranspose2d, norm: nn.BatchNorm2d | None = None, slope: float | None = None):
        super().__init__()
        from rlad.models.nbs.autoencoder import phase_weight

        self.channels = conv.out_channels
        weight = conv.weight.detach()
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(self.channels, dtype=weight.dtype)
        if norm is not None:  # per output channel, which is dimension 1 of a transposed convolution's weight
            scale, shift = batchnorm_affine(norm)
            weight, bias = weight * scale.view(1, -1, 1, 1), bias * scale + shift
        self.register_buffer("weight", phase_weight(weight).contiguous())
        self.register_buffer("bias", bias.repeat_interleave(4).contiguous())
        self.slope = slope

    @staticmethod
    def fits(module: nn.Module) -> bool:
        return (isinstance(module, nn.ConvTranspose2d) and module.kernel_size == (4, 4) and module.stride == (2, 2)
                and module.padding == (1, 1) and module.output_padding == (0, 0) and module.dilation == (1, 1)
                and module.groups == 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias)
        if self.slope is not None:
            out = F.leaky_relu(out, self.slope)
        n, _, rows, cols = out.shape
        h, w, c = rows - 1, cols - 1, self.channels
        parities = out.view(n, c, 2, 2, rows, cols)
        # output pixel (2t + a, 2u + b) is parity (a, b) at (t + a, u + b)
        lines = [torch.stack([parities[:, :, a, b, a : a + h, b : b + w] for b in range(2)], dim=-1).reshape(n, c, h, 2 * w)
                 for a in range(2)]
        return torch.stack(lines, dim=3).reshape(n, c, 2 * h, 2 * w)


def with_phase_transposed(network: nn.Module) -> nn.Module:
    """A copy of `network` (in eval mode) with every `PhaseTransposedConv.fits` layer replaced; in an
    `nn.Sequential`, a BatchNorm2d and a LeakyReLU right after it go into the replacement."""
    import copy

    network = copy.deepcopy(network).eval()
    for parent in list(network.modules()):
        children = list(parent.named_children())
        for i, (name, child) in enumerate(children):
            if not PhaseTransposedConv.fits(child):
                continue
            norm = slope = None
            if isinstance(parent, nn.Sequential):
                following = [module for _, module in children[i + 1 : i + 3]]
                if following and isinstance(following[0], nn.BatchNorm2d) and following[0].track_running_stats:
                    norm = following[0]
                    setattr(parent, children[i + 1][0], nn.Identity())
                    if len(following) > 1 and isinstance(following[1], nn.LeakyReLU):
                        slope = following[1].negative_slope
                        setattr(parent, children[i + 2][0], nn.Identity())
            setattr(parent, name, PhaseTransposedConv(child, norm, slope))
    return network


class AEGraph(PixelGraph):
    def __init__(self, model, image_size: int, post: PostProcessor):
        super().__init__(image_size, post)
        from rlad.models.ae import reconstruction_error_map

        self.network = with_phase_transposed(model.network)
        self.error = reconstruction_error_map
        self.blur = Blur(scaled_sigma(model.config.blur_sigma, image_size))

    def raw(self, images):
        maps = self.blur(self.error(images, self.network(images)))[:, 0]
        return maps, maps.flatten(1).amax(1)


class NBSGraph(PixelGraph):
    """NBS at inference (`NBSModel.predict`): each snapshot's reconstruction error at the profile
    resolution (the loss profile), the context channels (backbone features and the standardised
    PatchCore prior, as `ContextEncoder` makes them), the folded predictor, the prior ensemble, and
    the probabilities upsampled and smoothed; image score from the pooled grid probabilities. The
    prior refiner (`PriorRefiner.predict`) is the same graph without the loss profile."""

    def __init__(self, model, image_size: int, post: PostProcessor):
        super().__init__(image_size, post)
        from rlad.models.nbs.autoencoder import tile, untile
        from rlad.models.nbs.head import image_score
        from rlad.models.nbs.profiles import profile_features, resize
        from rlad.models.patchcore import locally_aware_features

        cfg, encoder = model.config, model.encoder
        self.tile, self.untile, self.resize, self.profile_features = tile, untile, resize, profile_features
        self.image_score, self.combine = image_score, locally_aware_features
        self.profile_size, self.grid, self.score_pool = cfg.profile_size, cfg.predictor_grid, cfg.score_pool
        bank = getattr(model, "bank", None)  # the refiner has no snapshots, hence no profile
        self.snapshots = nn.ModuleList(m.eval() for m in bank._built()) if bank is not None else nn.ModuleList()
        self.kind = encoder.config.kind
        self.predictor = model.head.predictor
        self.prior_boost = float(cfg.prior_boost) if self.predictor.prior_residual else 0.0
        self.smooth = Smooth((self.grid, self.grid), image_size, scaled_sigma(cfg.blur_sigma, image_size))
        if self.kind in ("backbone", "patchcore"):
            self.backbone = Backbone(encoder.extractor)
            self.stages = list(encoder.extractor.stages)
            self.context_stages = sorted(encoder.config.backbone.stages)
        if self.kind == "patchcore":
            prior = encoder.prior
            if prior.config.reweight:
                raise ConfigError("a run with a reweighted PatchCore prior cannot be exported yet")
            self.prior_stages = sorted(encoder.config.prior_stages)
            self.prior_nearest = NearestDistance(prior.memory_bank)
            self.prior_mean, self.prior_std = float(encoder.prior_mean), float(encoder.prior_std)
            with torch.no_grad():
                levels = dict(zip(self.stages, self.backbone(torch.zeros(1, 3, image_size, image_size))))
                prior_grid = tuple(self.combine([levels[s] for s in self.prior_stages]).shape[-2:])
            sigma = scaled_sigma(prior.config.blur_sigma, image_size)
            self.prior_smooth = Smooth(prior_grid, image_size, sigma, shrink_to=self.grid)  # the prior on the grid

    def _profile(self, images: torch.Tensor) -> torch.Tensor:
        if not len(self.snapshots):
            return images[:, :0, : self.grid, : self.grid]
        small = self.resize(images, self.profile_size)
        errors = []
        for snapshot in self.snapshots:
            tiles, layout = self.tile(small, snapshot.patch)
            errors.append((small - self.untile(snapshot(tiles), layout)).abs().mean(1))
        return self.profile_features(torch.stack(errors, dim=1), self.grid)

    def _context(self, images: torch.Tensor) -> torch.Tensor:
        from rlad.models.maps import grey

        g = self.grid
        if self.kind == "none":
            return images[:, :0, :g, :g]
        if self.kind == "image":
            return F.interpolate(grey(images), size=(g, g), mode="area")
        levels = dict(zip(self.stages, self.backbone(images)))
        parts = [F.interpolate(levels[s], size=(g, g), mode="bilinear", align_corners=False) for s in self.context_stages]
        if self.kind == "patchcore":
            features = self.combine([levels[s] for s in self.prior_stages])
            b, d, h, w = features.shape
            distances = self.prior_nearest(features.permute(0, 2, 3, 1).reshape(b, h * w, d))
            prior = self.prior_smooth(distances.reshape(b, h, w))[:, None]  # already on the grid
            parts.append((prior - self.prior_mean) / self.prior_std)
        return torch.cat(parts, dim=1)

    def raw(self, images):
        features = torch.cat([self._profile(images), self._context(images)], dim=1)
        logits = self.predictor(features)
        if self.prior_boost:
            logits = logits + self.prior_boost * features[:, -1:]
        probs = torch.sigmoid(logits)
        return self.smooth(probs[:, 0]), self.image_score(probs, self.score_pool)


def _grid(backbone: Backbone, image_size: int, stride: int) -> tuple[int, int]:
    """The first tapped level's grid at `image_size` (measured on one image, not assumed from the stride)."""
    with torch.no_grad():
        level = backbone(torch.zeros(1, 3, image_size, image_size))[0]
    return tuple(level.shape[-2:])


GRAPHS = {"patchcore": PatchCoreGraph, "padim": PaDiMGraph, "ae": AEGraph, "nbs": NBSGraph, "refine": NBSGraph}


def graph_for(method: str, model, image_size: int, post: PostProcessor) -> PixelGraph:
    """The inference graph of a loaded run's model (eval mode, no gradients)."""
    if method not in GRAPHS:
        raise ConfigError(f"{method!r} runs cannot be exported; exportable methods: {', '.join(GRAPHS)}")
    graph = GRAPHS[method](model, image_size, post).eval()
    for param in graph.parameters():
        param.requires_grad_(False)
    return graph
