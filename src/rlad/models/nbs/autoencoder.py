"""The patch autoencoder whose *learning curve* is NBS's feature (docs/nbs.md).

A fresh autoencoder learns normal texture quickly and anomalous pixels slowly or erratically, so the
sequence of per-pixel reconstruction errors over its first steps after a reset (the loss profile)
separates the two. The network works on square patches; full images are scored by tiling them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
# seen as a 2-tap correlation over the input padded by 1: y[2t] = x[t-1] w[3] + x[t] w[1] reads the
# padded input at t, t+1 and y[2t+1] = x[t] w[2] + x[t+1] w[0] reads it at t+1, t+2.
_PHASE_TAPS = ((3, 1), (2, 0))
CHANNELS_LAST = torch.channels_last
STACK_TILES_PER_PASS = 32
"""Tiles a `SnapshotStack` takes through its convolutions at once: a batch of 8 images' 128 tiles in
one pass spills the intermediate blocks out of cache; in passes of 32 the profile of a batch of 8
costs up to a fifth less per image (benchmarks/speedup_alternating.py --part loss_profile), with the
same values (tests/models/test_nbs.py runs the stack in passes)."""
STACK_TILES_PER_DENSE = 128
"""Tiles a `SnapshotStack` takes through its dense layers at once (best a multiple of the passes
above): their weights, 3.3 MB per snapshot of the default autoencoder, are read once for this many
tiles instead of once per pass, and the wider products run closer to the CPU's peak (the profile of
a batch of 8: 6% less per image, docs/nbs.md "Cost")."""


def phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(kernel 4, stride 2, padding 1) weight (Cin, Cout, 4, 4) -> the weight
    (Cout * 4, Cin, 2, 2) of a 2 x 2 convolution over the input padded by 1 (`interleave` turns its
    output into the transposed convolution's): output channel c * 4 + 2a + b at (t + a, u + b) holds
    the output pixel (2t + a, 2u + b) of channel c. Each output takes its 4 real taps and nothing
    else; torch's CPU transposed convolution is several times slower than a convolution."""
    c_in, c_out = weight.shape[:2]
    out = weight.new_empty(c_out, 2, 2, c_in, 2, 2)
    for a, rows in enumerate(_PHASE_TAPS):
        for b, cols in enumerate(_PHASE_TAPS):
            for dy, ky in enumerate(rows):
                for dx, kx in enumerate(cols):
                    out[:, a, b, :, dy, dx] = weight[:, :, ky, kx].t()
    return out.reshape(c_out * 4, c_in, 2, 2)


def interleave(out: torch.Tensor) -> torch.Tensor:
    """Output (N, C * 4, h + 1, w + 1) of a `phase_weight` convolution -> the transposed
    convolution's output (N, C, 2h, 2w), channels-last."""
    n, channels, height, width = out.shape[0], out.shape[1] // 4, out.shape[-2] - 1, out.shape[-1] - 1
    parities = out.view(n, channels, 2, 2, height + 1, width + 1)
    full = out.new_empty(n, 2 * height, 2 * width, channels).permute(0, 3, 1, 2)
    for a in range(2):
        for b in range(2):
            full[:, :, a::2, b::2] = parities[:, :, a, b, a : a + height, b : b + width]
    return full


class SnapshotStack:
    """Several snapshots of one PatchAutoencoder run as one network: the first convolution with all
    snapshots' filters at once (they share the input), the deeper ones grouped by snapshot, the dense
    layers as batched matrix products, channels-last throughout (torch's CPU kernels for these small
    maps are up to 2x faster so). The same maths as running `forward` once per snapshot
    (tests/models/test_nbs.py compares them), several times faster on CPU.

    Each transposed convolution runs as a 2 x 2 convolution per output parity (`phase_weight`). The
    last one's output holds each 2 x 2 block of the reconstruction at one position: `block_errors`
    gives the error maps averaged over those blocks (what the loss profile needs on its grid) without
    assembling the reconstruction.

    Only the architecture without normalisation is stacked; `supports` says whether a model is.
    With `dtype=torch.bfloat16` the layers run in bf16 (on CPUs with bf16 units about half the cost;
    the errors against the patch are still taken in fp32).
    """

    def __init__(self, models: list[PatchAutoencoder], dtype: torch.dtype = torch.float32):
        if not models or not all(self.supports(m) for m in models):
            raise ValueError("SnapshotStack: needs at least one PatchAutoencoder without normalisation")
        self.count = len(models)
        self.patch = models[0].patch
        with torch.no_grad():
            convs = [[layer for layer in m.encoder if isinstance(layer, nn.Conv2d)] for m in models]
            self.encoder = [
                (torch.cat([c[level].weight for c in convs]).contiguous(memory_format=CHANNELS_LAST),
                 torch.cat([c[level].bias for c in convs]))
                for level in range(len(convs[0]))
            ]
            area = models[0].expand[0].kernel_size[0] ** 2
            # The dense layers as matrices over the 8 x 8 maps' values in (y, x, channel) order, the
            # channels-last layout of the maps they read and feed (`_dense`).
            self.squeeze = (torch.stack([m.squeeze[0].weight.permute(2, 3, 1, 0).flatten(0, 2) for m in models]),  # (S, 64*C, B)
                            torch.stack([m.squeeze[0].bias for m in models]).unsqueeze(1))
            self.expand = (torch.stack([m.expand[0].weight.permute(0, 2, 3, 1).flatten(1) for m in models]),  # (S, B, 64*C)
                           torch.stack([m.expand[0].bias.repeat(area) for m in models]).unsqueeze(1))
            decoders = [[layer for layer in m.decoder if isinstance(layer, nn.ConvTranspose2d)] for m in models]
            # Every transposed convolution as a 2 x 2 convolution per output parity: torch's grouped
            # transposed convolution has no oneDNN path and was the stack's slowest layer.
            self.decoder = [
                (torch.cat([phase_weight(d[level].weight) for d in decoders]).contiguous(memory_format=CHANNELS_LAST),
                 torch.cat([d[level].bias.repeat_interleave(4) for d in decoders]))
                for level in range(len(decoders[0]) - 1)
            ]
            self.last = (torch.cat([phase_weight(d[-1].weight) for d in decoders]).contiguous(memory_format=CHANNELS_LAST),
                         torch.cat([d[-1].bias.repeat_interleave(4) for d in decoders]))
        self.dtype = dtype
        if dtype != torch.float32:
            def cast(pair):
                return tuple(tensor.to(dtype) for tensor in pair)
            self.encoder = [cast(pair) for pair in self.encoder]
            self.decoder = [cast(pair) for pair in self.decoder]
            self.squeeze, self.expand, self.last = cast(self.squeeze), cast(self.expand), cast(self.last)
        self.slope = 0.2

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return isinstance(model, PatchAutoencoder) and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    def _encode(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, C, p, p) -> the encoder's output (N, S * C', 8, 8), channels-last, in the stack's dtype."""
        x = patches.to(self.dtype).contiguous(memory_format=CHANNELS_LAST)
        for level, (weight, bias) in enumerate(self.encoder):
            x = F.leaky_relu_(F.conv2d(x, weight, bias, stride=2, padding=1, groups=1 if level == 0 else self.count), self.slope)
        return x

    def _dense(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """The 8 x 8 -> code -> 8 x 8 layers of the encoder outputs `skips` (passes of tiles), as one
        batched product per layer, each tile a row of its 8 x 8 map's values in (y, x, channel)
        order: the grown maps, (S, tiles of all passes, 64 * C'). In that order the copies into and
        out of the products move runs of C' channels instead of single values, and the products take
        the weights as their right factor: the profile 1.09x / 1.16x faster at batch 1 / 8 than with
        columns in (channel, y, x) order and the weights on the left (docs/nbs.md, "Cost")."""
        s, n = self.count, sum(len(skip) for skip in skips)
        channels, side = skips[0].shape[1] // s, skips[0].shape[-1]
        rows = skips[0].new_empty(s, n, side, side, channels)
        start = 0
        for skip in skips:
            count = len(skip)
            rows[:, start : start + count] = skip.permute(0, 2, 3, 1).view(count, side, side, s, channels).permute(3, 0, 1, 2, 4)
            start += count
        code = F.leaky_relu_(torch.baddbmm(self.squeeze[1], rows.view(s, n, -1), self.squeeze[0]), self.slope)
        return F.leaky_relu_(torch.baddbmm(self.expand[1], code, self.expand[0]), self.slope)

    def _decode(self, grown: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The grown maps (S, N, 64 * C') and the encoder's output (the skip connection) of N tiles ->
        the last transposed convolution's `phase_weight` output (N, S * C * 4, p/2 + 1, p/2 + 1).
        Channels stay snapshot-major throughout."""
        s, n = self.count, skip.shape[0]
        channels, side = skip.shape[1] // s, skip.shape[-1]
        # The decoder's input, channels-last: per snapshot the grown code's channels, then the skip's.
        joined = skip.new_empty(n, side, side, s, 2 * channels)
        joined[..., :channels] = grown.view(s, n, side, side, channels).permute(1, 2, 3, 0, 4)
        joined[..., channels:] = skip.view(n, s, channels, side, side).permute(0, 3, 4, 1, 2)
        x = joined.view(n, side, side, -1).permute(0, 3, 1, 2)
        for weight, bias in self.decoder:
            x = F.leaky_relu_(interleave(F.conv2d(x, weight, bias, padding=1, groups=s)), self.slope)
        return F.conv2d(x, self.last[0], self.last[1], padding=1, groups=s)

    def _through_layers(self, patches: torch.Tensor,
                        finish: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`finish(last layer's output, tiles)` of (N, C, p, p) tiles, concatenated: the convolutions
        take `STACK_TILES_PER_PASS` tiles at a time, the dense layers `STACK_TILES_PER_DENSE`."""
        results = []
        for group in patches.split(STACK_TILES_PER_DENSE):
            passes = group.split(STACK_TILES_PER_PASS)
            skips = [self._encode(tiles) for tiles in passes]
            grown = self._dense(skips)
            start = 0
            for tiles, skip in zip(passes, skips):
                results.append(finish(self._decode(grown[:, start : start + len(tiles)], skip), tiles))
                start += len(tiles)
        return results[0] if len(results) == 1 else torch.cat(results)

    @torch.no_grad()
    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, C, p, p) -> reconstructions (N, S, C, p, p)."""
        return self._through_layers(patches, self._reconstruction)

    def _reconstruction(self, out: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        return interleave(out.float()).contiguous().view(len(patches), self.count, -1, self.patch, self.patch)

    @torch.no_grad()
    def block_errors(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, C, p, p) -> |patch - reconstruction| averaged over channels and 2 x 2 pixel blocks,
        (N, S, p/2, p/2)."""
        return self._through_layers(patches, self._block_errors)

    def _block_errors(self, out: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        n, s, c = patches.shape[0], self.count, patches.shape[1]
        half = self.patch // 2
        # The last layer's output, channels-last, holds pixel (2t + a, 2u + b) at position
        # (p, q) = (t + a, u + b), parity (a, b). The patch in the same layout: padded by 1, its rows
        # and columns taken in pairs (2p, 2p + 1) and each pair reversed, so that (p, q, a, b) reads
        # padded pixel (2p + 1 - a, 2q + 1 - b) = pixel (2t + a, 2u + b). Positions outside the patch
        # (one row and column per parity) are dropped when the parities are summed below.
        out = out.permute(0, 2, 3, 1).reshape(n, half + 1, half + 1, s, c, 4)
        padded = F.pad(patches, (1, 1, 1, 1)).view(n, c, half + 1, 2, half + 1, 2).flip(3, 5)
        target = padded.permute(0, 2, 4, 1, 3, 5).reshape(n, half + 1, half + 1, 1, c, 4)
        # fp32 either way: a bf16 `out` is widened inside the subtraction, an fp32 one reused in place.
        errors = (out.sub_(target) if out.dtype == target.dtype else torch.sub(out, target)).abs_()
        per_parity = errors[..., 0, :].clone()  # (N, k+1, k+1, S, parity); channel by channel is faster than sum()
        for channel in range(1, c):
            per_parity += errors[..., channel, :]
        total = per_parity[:, :half, :half, :, 0] + per_parity[:, :half, 1:, :, 1]
        total += per_parity[:, 1:, :half, :, 2]
        total += per_parity[:, 1:, 1:, :, 3]
        return total.permute(0, 3, 1, 2).div_(4 * c)


@torch.no_grad()
def stacked_error_maps(stack: SnapshotStack, images: torch.Tensor) -> torch.Tensor:
    """`error_maps` of every snapshot of `stack` (offset 0): (B, 3, H, W) -> (B, S, H, W)."""
    tiles, layout = tile(images, stack.patch)
    errors = (stack(tiles) - tiles.unsqueeze(1)).abs().mean(2)  # (tiles, S, p, p)
    return untile(errors, layout)


@torch.no_grad()
def stacked_block_errors(stack: SnapshotStack, images: torch.Tensor) -> torch.Tensor:
    """`stacked_error_maps` averaged over 2 x 2 pixel blocks, (B, 3, H, W) -> (B, S, H/2, W/2), for
    even H and W: what area-resizing the error maps by a factor of 2 gives, at a fraction of the cost."""
    height, width = images.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"stacked_block_errors: needs an even image size, got {height} x {width}")
    tiles, (batch, rows, cols, _, _, offset) = tile(images, stack.patch)
    return untile(stack.block_errors(tiles), (batch, rows, cols, height // 2, width // 2, offset))
