"""The predictor: per-pixel defect probability from the loss profile (plus optional extra channels).

Paper: dilated 3x3 convolutions (dilation 1, 2, 4, 8; 10 -> 32 -> 16 -> 8 -> 4 channels, BatchNorm +
LeakyReLU), a 1x1 convolution and a sigmoid, trained with an alpha-weighted BCE whose weight on the
normal pixels is annealed from 1 to 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class SubgridConv2d(nn.Conv2d):
    """A dilated 3x3 convolution (replicate or zero padding by its dilation) computed as an undilated
    one on the image's dilation x dilation interleaved sub-grids (space-to-batch): the same products
    and sums, but oneDNN's dilated kernels, the backward pass above all, are slow on a CPU
    (docs/nbs.md, Cost). Replicate padding comes first, on the whole image, so every sub-grid sees
    the rows a dilated kernel would; zero padding becomes each sub-grid's own padding by one, inside
    the convolution. Sizes the dilation does not divide take the plain dilated route. Same
    parameters and state_dict as `nn.Conv2d`."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        step = self.dilation[0]
        zeros = self.padding_mode == "zeros"  # the convolution pads; otherwise the input is padded first
        source = x if zeros else F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        batch, channels, height, width = source.shape
        if step == 1 or self.dilation[1] != step or height % step or width % step or (zeros and self.padding != (step, step)):
            return F.conv2d(source, weight, bias, self.stride, self.padding if zeros else 0, self.dilation, self.groups)
        grids = source.view(batch, channels, height // step, step, width // step, step).permute(0, 3, 5, 1, 2, 4)
        out = F.conv2d(grids.reshape(batch * step * step, channels, height // step, width // step), weight, bias, padding=int(zeros))
        rows, cols = out.shape[-2:]
        out = out.view(batch, step, step, -1, rows, cols).permute(0, 3, 4, 1, 5, 2)
        return out.reshape(batch, -1, rows * step, cols * step)


def project_with_channel_dropout(features: torch.Tensor, projection: nn.Conv2d, p: float) -> torch.Tensor:
    """`projection(F.dropout2d(features, p, training=True))` for a 1x1 convolution `projection`, with the
    channel mask folded into each image's copy of the weights: one batched matrix product instead of a
    masked copy of the input and oneDNN's 1x1 convolution (docs/nbs.md, Cost). The mask is drawn as
    `dropout2d` draws it, so a seed drops the same channels either way."""
    batch, channels, height, width = features.shape
    keep = torch.empty(batch, channels, 1, 1, dtype=features.dtype).bernoulli_(1 - p).div_(1 - p)
    weights = projection.weight.view(1, -1, channels) * keep.view(batch, 1, channels)
    out = torch.baddbmm(projection.bias.view(1, -1, 1), weights, features.reshape(batch, channels, height * width))
    return out.view(batch, -1, height, width)


class Predictor(nn.Module):
    """Returns logits (B, 1, H, W); `torch.sigmoid` of them is the defect probability.

    rlad additions (all off gives the paper's network): `project` > 0 puts a 1x1 convolution to that
    many channels in front (many context channels would otherwise make the first 3x3 layer the
    costliest of the model); `dropout` drops whole input channels while training (few labelled
    images: the head must not lean on any one feature); `prior_residual` treats the last input
    channel as a standardised unsupervised anomaly map and predicts a correction of it: logits =
    body(x) + w * prior + b, with the body's last layer starting at zero, so training starts from
    the prior's ranking instead of from noise; `padding` is the 3 x 3 layers' (replicate, or zeros:
    the refiner's default, `RefineConfig`).
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...] = (32, 16, 8, 4),
        dilations: tuple[int, ...] = (1, 2, 4, 8),
        project: int = 0,
        dropout: float = 0.0,
        prior_residual: bool = False,
        prior_offset: float = -3.0,
        padding: str = "replicate",
    ):
        super().__init__()
        if len(widths) != len(dilations):
            raise ValueError(f"predictor widths {widths} and dilations {dilations} differ in length")
        layers: list[nn.Module] = []
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        previous = in_channels
        if project > 0:
            layers += [nn.Conv2d(previous, project, 1), nn.BatchNorm2d(project), nn.LeakyReLU(0.2)]
            previous = project
        for channels, dilation in zip(widths, dilations):
            layers += [
                SubgridConv2d(previous, channels, 3, padding=dilation, dilation=dilation, padding_mode=padding),
                nn.BatchNorm2d(channels),
                nn.LeakyReLU(0.2),
            ]
            previous = channels
        layers.append(nn.Conv2d(previous, 1, 1))
        self.body = nn.Sequential(*layers)
        self.padding = padding
        self.dropout_then_project = dropout > 0 and project > 0  # training folds the two (`project_with_channel_dropout`)
        self.prior_residual = prior_residual
        if prior_residual:
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)
            # A standardised prior of ~3 (three normal-image standard deviations) starts at p = 0.5.
            self.prior_weight = nn.Parameter(torch.tensor(1.0))
            self.prior_bias = nn.Parameter(torch.tensor(float(prior_offset)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout_then_project:
            logits = self.body[2:](project_with_channel_dropout(features, self.body[1], self.body[0].p))
        else:
            logits = self.body(features)
        if self.prior_residual:
            logits = logits + self.prior_weight * features[:, -1:] + self.prior_bias
        return logits


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


def train_epochs(
    predictor: Predictor,
    optimizer: torch.optim.Optimizer,
    examples: list[tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    batch: int,
    crop: int,
    alpha: float,
    generator: torch.Generator,
    encode: Callable[..., torch.Tensor] | None = None,
) -> float:
    """`epochs` passes over (features (C, h, w), soft mask (1, h, w)) examples in random order, on
    random `crop` windows (0 = whole maps), with the alpha-weighted BCE; returns the mean loss.

    Shared by NBS (examples = profiles + context) and the supervised control (context only), so the
    two differ in their inputs and nothing else. With `encode`, an example's first item is a tuple
    of tensors, stacked item by item and passed to `encode` (a trainable feature network whose
    parameters `optimizer` also holds) to give the predictor's input; crops are then off."""
    if encode is not None and crop:
        raise ValueError("train_epochs: crop must be 0 when encode computes the features")
    predictor.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), batch):
            ids = order[start : start + batch]
            if len(ids) < 2:  # BatchNorm needs more than one value per channel
                continue
            if encode is None:
                feats = torch.stack([examples[i][0] for i in ids]).float()
            else:
                feats = encode(*(torch.stack(part).float() for part in zip(*(examples[i][0] for i in ids))))
            masks = torch.stack([examples[i][1] for i in ids]).float()
            if crop:
                feats, masks = random_crops([feats, masks], crop, generator)
            loss = weighted_bce(predictor(feats), masks, alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    predictor.eval()
    return float(sum(losses) / len(losses)) if losses else float("nan")
