"""The patch autoencoder whose *learning curve* is NBS's feature (docs/nbs.md).

A fresh autoencoder learns normal texture quickly and anomalous pixels slowly or erratically, so the
sequence of per-pixel reconstruction errors over its first steps after a reset (the loss profile)
separates the two. The network works on square patches; full images are scored by tiling them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BOTTLENECK_SIDE = 8  # the encoder stops at 8x8 before collapsing to 1x1, as in the paper


NORMS = ("none", "batch")


def _norm(channels: int, kind: str) -> nn.Module:
    """"batch" is the paper's BatchNorm without affine parameters. Its eval-mode statistics after the
    few steps of a reset cycle are poor estimates (cumulative averages over very different early
    batches), which made the error maps of magnetic tile nearly useless (docs/nbs.md); "none" avoids
    the train/eval mismatch altogether and is the default."""
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False, momentum=None)
    raise ValueError(f"unknown autoencoder norm {kind!r}; choose one of {NORMS}")


def encoder_widths(patch: int, width: int, max_width: int = 256) -> list[int]:
    """Channels of each stride-2 level from `patch` down to 8x8 (doubling from `width`)."""
    if patch < BOTTLENECK_SIDE * 2 or patch & (patch - 1):
        raise ValueError(f"patch size must be a power of two >= 16, got {patch}")
    levels = int(math.log2(patch // BOTTLENECK_SIDE))
    return [min(width * 2**i, max_width) for i in range(levels)]


class PatchAutoencoder(nn.Module):
    """Strided 4x4 convolutions to 8x8, a 1x1 bottleneck, transposed convolutions back, with one skip
    connection at the 8x8 level; optional BatchNorm without affine parameters, LeakyReLU(0.2); linear
    output."""

    def __init__(self, patch: int = 64, width: int = 32, bottleneck: int = 200, in_channels: int = 3, norm: str = "none"):
        super().__init__()
        self.patch = patch
        widths = encoder_widths(patch, width)
        encoder: list[nn.Module] = []
        previous = in_channels
        for channels in widths:
            encoder += [nn.Conv2d(previous, channels, 4, 2, 1), _norm(channels, norm), nn.LeakyReLU(0.2)]
            previous = channels
        self.encoder = nn.Sequential(*encoder)
        self.squeeze = nn.Sequential(
            nn.Conv2d(previous, bottleneck, BOTTLENECK_SIDE), _norm(bottleneck, norm), nn.LeakyReLU(0.2)
        )
        self.expand = nn.Sequential(
            nn.ConvTranspose2d(bottleneck, previous, BOTTLENECK_SIDE), _norm(previous, norm), nn.LeakyReLU(0.2)
        )
        decoder: list[nn.Module] = []
        previous = 2 * previous  # the skip connection doubles the 8x8 channels
        for channels in reversed(widths[:-1]):
            decoder += [nn.ConvTranspose2d(previous, channels, 4, 2, 1), _norm(channels, norm), nn.LeakyReLU(0.2)]
            previous = channels
        decoder.append(nn.ConvTranspose2d(previous, in_channels, 4, 2, 1))
        self.decoder = nn.Sequential(*decoder)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        skip = self.encoder(patches)
        # The 8x8 -> 1x1 convolution and its transpose are dense layers; as matrix products they run
        # 2-4x faster on CPU than torch's convolution kernels (same parameters, same maths).
        squeeze, expand = self.squeeze[0], self.expand[0]
        code = F.linear(skip.flatten(1), squeeze.weight.flatten(1), squeeze.bias)[:, :, None, None]
        code = self.squeeze[2](self.squeeze[1](code))
        side = expand.kernel_size[0]
        grown = (code.flatten(1) @ expand.weight.flatten(1)).view(-1, expand.out_channels, side, side)
        grown = self.expand[2](self.expand[1](grown + expand.bias.view(1, -1, 1, 1)))
        return self.decoder(torch.cat([grown, skip], dim=1))

    def forward_reference(self, patches: torch.Tensor) -> torch.Tensor:
        """The same network through the convolution modules (for tests)."""
        skip = self.encoder(patches)
        return self.decoder(torch.cat([self.expand(self.squeeze(skip)), skip], dim=1))


def tile(images: torch.Tensor, patch: int, offset: int = 0) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(B, C, H, W) -> (B * rows * cols, C, patch, patch) non-overlapping tiles of the image shifted by
    `offset` pixels (reflect-padded so every pixel is covered); returns the layout for `untile`."""
    batch, channels, height, width = images.shape
    pad_top = offset
    pad_bottom = (-(height + offset)) % patch
    pad_left = offset
    pad_right = (-(width + offset)) % patch
    padded = F.pad(images, (pad_left, pad_right, pad_top, pad_bottom), mode="replicate")
    rows, cols = padded.shape[-2] // patch, padded.shape[-1] // patch
    tiles = padded.reshape(batch, channels, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(-1, channels, patch, patch), (batch, rows, cols, height, width, offset)


def untile(tiles: torch.Tensor, layout: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `tile` for (N, C, p, p) tiles -> (B, C, H, W), cropping the padding."""
    batch, rows, cols, height, width, offset = layout
    patch = tiles.shape[-1]
    channels = tiles.shape[1]
    full = tiles.reshape(batch, rows, cols, channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
    full = full.reshape(batch, channels, rows * patch, cols * patch)
    return full[:, :, offset : offset + height, offset : offset + width]


@torch.no_grad()
def error_maps(model: PatchAutoencoder, images: torch.Tensor, offsets: tuple[int, ...] = (0,)) -> torch.Tensor:
    """Per-pixel reconstruction error |x - AE(x)| averaged over channels: (B, 3, H, W) -> (B, H, W).

    With several tiling `offsets` the errors are averaged, which hides the seams between tiles."""
    was_training = model.training
    model.eval()
    total = torch.zeros(images.shape[0], images.shape[-2], images.shape[-1])
    for offset in offsets:
        tiles, layout = tile(images, model.patch, offset)
        recon = untile(model(tiles), layout)
        total += (images - recon).abs().mean(1)
    model.train(was_training)
    return total / len(offsets)


def crop_patches(images: torch.Tensor, index: torch.Tensor, top: torch.Tensor, left: torch.Tensor, patch: int) -> torch.Tensor:
    """Gather (N, C, patch, patch) patches: image `index[i]` at (top[i], left[i]) (inside the image)."""
    rows = top.view(-1, 1) + torch.arange(patch).view(1, -1)  # (N, p)
    cols = left.view(-1, 1) + torch.arange(patch).view(1, -1)
    gathered = images[index.view(-1, 1, 1), :, rows.view(-1, patch, 1), cols.view(-1, 1, patch)]  # (N, p, p, C)
    return gathered.permute(0, 3, 1, 2).contiguous()


# Which taps of a stride-2, padding-1, 4-tap transposed convolution feed an output of each parity,
# seen as a 3-tap correlation over the input padded by 1: y[2t] = x[t-1] w[3] + x[t] w[1] and
# y[2t+1] = x[t] w[2] + x[t+1] w[0] (None: no tap).
_PHASE_TAPS = ((3, 1, None), (None, 2, 0))


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(kernel 4, stride 2, padding 1) weight (Cin, Cout, 4, 4) -> the weight
    (Cout * 4, Cin, 3, 3) of the equivalent 3 x 3 convolution (padding 1) followed by
    `pixel_shuffle(2)`: output channel c * 4 + 2a + b holds the outputs of row parity a, column parity
    b. torch's CPU transposed convolution is several times slower than its convolution."""
    c_in, c_out = weight.shape[:2]
    out = weight.new_zeros(c_out, 2, 2, c_in, 3, 3)
    for a, rows in enumerate(_PHASE_TAPS):
        for b, cols in enumerate(_PHASE_TAPS):
            for dy, ky in enumerate(rows):
                for dx, kx in enumerate(cols):
                    if ky is not None and kx is not None:
                        out[:, a, b, :, dy, dx] = weight[:, :, ky, kx].t()
    return out.reshape(c_out * 4, c_in, 3, 3)


class SnapshotStack:
    """Several snapshots of one PatchAutoencoder run as one network: the first convolution with all
    snapshots' filters at once (they share the input), the deeper ones and the transposed ones
    (as sub-pixel convolutions, `subpixel_weight`) grouped by snapshot, the dense layers as batched
    matrix products. The same maths as running `forward` once per snapshot (tests/models/test_nbs.py
    compares them), several times faster on CPU.

    Only the architecture without normalisation is stacked; `supports` says whether a model is.
    """

    def __init__(self, models: list[PatchAutoencoder]):
        if not models or not all(self.supports(m) for m in models):
            raise ValueError("SnapshotStack: needs at least one PatchAutoencoder without normalisation")
        self.count = len(models)
        self.patch = models[0].patch
        with torch.no_grad():
            convs = [[layer for layer in m.encoder if isinstance(layer, nn.Conv2d)] for m in models]
            self.encoder = [
                (torch.cat([c[level].weight for c in convs]), torch.cat([c[level].bias for c in convs]))
                for level in range(len(convs[0]))
            ]
            self.squeeze = (torch.stack([m.squeeze[0].weight.flatten(1).t() for m in models]),  # (S, C*64, B)
                            torch.stack([m.squeeze[0].bias for m in models]).unsqueeze(1))
            self.expand = (torch.stack([m.expand[0].weight.flatten(1) for m in models]),  # (S, B, C*64)
                           torch.stack([m.expand[0].bias for m in models]))
            decoders = [[layer for layer in m.decoder if isinstance(layer, nn.ConvTranspose2d)] for m in models]
            self.decoder = [
                (torch.cat([subpixel_weight(d[level].weight) for d in decoders]),
                 torch.cat([d[level].bias.repeat_interleave(4) for d in decoders]))
                for level in range(len(decoders[0]))
            ]
        self.slope = 0.2

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return isinstance(model, PatchAutoencoder) and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    @torch.no_grad()
    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, C, p, p) -> reconstructions (N, S, C, p, p). Channels stay snapshot-major throughout."""
        s, n = self.count, patches.shape[0]
        x = patches
        for level, (weight, bias) in enumerate(self.encoder):
            x = F.leaky_relu(F.conv2d(x, weight, bias, stride=2, padding=1, groups=1 if level == 0 else s), self.slope)
        side = x.shape[-1]
        skip = x.view(n, s, -1, side, side)
        code = torch.baddbmm(self.squeeze[1], skip.transpose(0, 1).reshape(s, n, -1), self.squeeze[0])
        grown = torch.bmm(F.leaky_relu(code, self.slope), self.expand[0]).view(s, n, -1, side, side)
        grown = F.leaky_relu(grown + self.expand[1].view(s, 1, -1, 1, 1), self.slope).transpose(0, 1)
        x = torch.cat([grown, skip], dim=2).reshape(n, -1, side, side)
        for level, (weight, bias) in enumerate(self.decoder):
            x = F.pixel_shuffle(F.conv2d(x, weight, bias, padding=1, groups=s), 2)
            if level < len(self.decoder) - 1:
                x = F.leaky_relu(x, self.slope)
        return x.view(n, s, -1, x.shape[-2], x.shape[-1])


@torch.no_grad()
def stacked_error_maps(stack: SnapshotStack, images: torch.Tensor) -> torch.Tensor:
    """`error_maps` of every snapshot of `stack` (offset 0): (B, 3, H, W) -> (B, S, H, W)."""
    tiles, layout = tile(images, stack.patch)
    errors = (stack(tiles) - tiles.unsqueeze(1)).abs().mean(2)  # (tiles, S, p, p)
    return untile(errors, layout)
