"""MobileNetV2 in plain PyTorch, with torchvision's parameter names, as a multi-level feature extractor.

torchvision cannot be imported here (its CPU builds do not load next to this torch), yet its ImageNet
MobileNetV2 state dict is the one pretrained backbone reachable offline. The module tree below
reproduces torchvision's layout (`features.<i>...`, `classifier.1`) so that state dict loads with
`strict=True`, key for key, without any renaming.

Feature levels are numbered like timm's `mobilenetv2_100` stages (`blocks.<i>`), the names the
anomalib peer runs used ("stages 2+4" for PatchCore, "1+2+4" for PaDiM):

| stage | torchvision modules | channels | stride |
|---|---|---|---|
| 0 | features.1      | 16  | 2  |
| 1 | features.2-3    | 24  | 4  |
| 2 | features.4-6    | 32  | 8  |
| 3 | features.7-10   | 64  | 16 |
| 4 | features.11-13  | 96  | 16 |
| 5 | features.14-16  | 160 | 32 |
| 6 | features.17     | 320 | 32 |
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from rlad.errors import ConfigError
from rlad.models.base import ImageNetNorm

# (expansion t, output channels c, repeats n, first stride s) per block group: the MobileNetV2 paper's table.
_INVERTED_RESIDUAL_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]

# Index into `features` of the last module of each stage (see the module docstring's table).
STAGE_LAST_FEATURE = {0: 1, 1: 3, 2: 6, 3: 10, 4: 13, 5: 16, 6: 17}
STAGE_CHANNELS = {0: 16, 1: 24, 2: 32, 3: 64, 4: 96, 5: 160, 6: 320}
STAGE_STRIDE = {0: 2, 1: 4, 2: 8, 3: 16, 4: 16, 5: 32, 6: 32}


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6; children named 0/1/2 as torchvision's Conv2dNormActivation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """Width 1.0 MobileNetV2 whose `state_dict()` keys equal torchvision's `mobilenet_v2()`."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        in_channels = 32
        layers: list[nn.Module] = [ConvBNReLU(3, in_channels, stride=2)]
        for t, c, n, s in _INVERTED_RESIDUAL_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(in_channels, c, s if i == 0 else 1, t))
                in_channels = c
        layers.append(ConvBNReLU(in_channels, 1280, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        self._init_random()

    def _init_random(self) -> None:
        # The same scheme as torchvision, so a random-init backbone behaves like an untrained one there.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


@dataclass
class BackboneConfig:
    weights: str = ""
    """Path to torchvision's ImageNet `mobilenet_v2` state dict (e.g. mobilenet_v2-b0353104.pth). Empty:
    random initialisation (with a warning; only useful for tests)."""
    stages: list[int] = field(default_factory=lambda: [2, 4])
    """Feature levels to extract (timm stage numbering 0-6; see rlad.models.backbones)."""
    micro_batch: int = 2
    """Images per backbone forward pass (small batches keep activations in the CPU cache)."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weight file; a ConfigError naming the path when it is missing or unreadable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"backbone weights {path}: file not found (model.backbone.weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ConfigError(f"backbone weights {path}: not a readable PyTorch weight file ({exc.__class__.__name__})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"backbone weights {path}: does not hold a state dict of tensors")
    return state


WEIGHTS_ENV = "RLAD_BACKBONE_WEIGHTS"


def load_mobilenet_v2(weights: str | Path | None, seed: int = 0) -> MobileNetV2:
    """The full network in eval mode: ImageNet weights from `weights` (strict); when empty, from the
    file named by $RLAD_BACKBONE_WEIGHTS if set, else random (with a warning)."""
    weights = weights or os.environ.get(WEIGHTS_ENV, "")
    if weights:
        net = MobileNetV2()
        state = read_state_dict(weights)
        expected = set(net.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"backbone weights {weights}: not a torchvision mobilenet_v2 state dict "
                f"({len(missing)} missing key(s), e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})"
            )
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1].strip()
            raise ConfigError(f"backbone weights {weights}: shapes do not match mobilenet_v2 ({first})") from None
    else:
        warnings.warn(
            "no backbone weights given: using a RANDOMLY initialised MobileNetV2 (features will be poor). "
            "Set the environment variable RLAD_BACKBONE_WEIGHTS (or the method's backbone.weights option, "
            "e.g. --set model.backbone.weights=PATH for patchcore, model.context.backbone.weights for nbs) "
            "to torchvision's ImageNet mobilenet_v2 .pth file.",
            stacklevel=2,
        )
        with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
            torch.manual_seed(seed)
            net = MobileNetV2()
    return net.eval()


def checked_stages(stages) -> list[int]:
    """Sorted distinct stage numbers; a ConfigError for anything else."""
    try:
        stages = [int(s) for s in stages]
    except (TypeError, ValueError):
        stages = None
    if not stages or any(s not in STAGE_LAST_FEATURE for s in stages) or len(set(stages)) != len(stages):
        raise ConfigError(
            f"model.backbone.stages={stages}: give distinct stage numbers from {sorted(STAGE_LAST_FEATURE)} (e.g. [2, 4])"
        )
    return sorted(stages)


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a Conv2d into the conv (in place; eval-mode maths).

    Frozen inference only: it removes one full pass over every activation, which matters on CPU.
    """
    for child in module.children():
        fuse_conv_bn(child)
    children = list(module.named_children())
    for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
            )
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
            setattr(module, conv_name, fused)
            setattr(module, bn_name, nn.Identity())
    return module


class FeatureExtractor(nn.Module):
    """Frozen MobileNetV2 truncated after the deepest requested stage; returns one map per stage.

    Input: float images (B, 3, H, W) in [0, 1]; ImageNet normalisation happens inside. The forward
    pass runs a BatchNorm-folded, channels-last copy in micro-batches (CPU caches are small: one image
    at a time is faster per image than eight); `weights_state()` keeps torchvision's names for saving.
    """

    def __init__(self, stages: list[int] | tuple[int, ...], network: MobileNetV2 | None = None, micro_batch: int = 2):
        super().__init__()
        self.stages = checked_stages(stages)
        self.micro_batch = max(1, int(micro_batch))
        network = network if network is not None else MobileNetV2()
        last = STAGE_LAST_FEATURE[self.stages[-1]]
        truncated = nn.Sequential(*copy.deepcopy(list(network.features.children())[: last + 1])).eval()
        self._weights = {f"features.{k}": v.detach().clone() for k, v in truncated.state_dict().items()}
        self.features = fuse_conv_bn(truncated).to(memory_format=torch.channels_last)
        self._taps = {STAGE_LAST_FEATURE[s]: s for s in self.stages}
        self.normalise = ImageNetNorm()
        self.eval()
        for param in self.parameters():
            param.requires_grad_(False)

    @classmethod
    def from_weights_state(cls, stages, state: dict[str, torch.Tensor], micro_batch: int = 2) -> "FeatureExtractor":
        """Rebuild from `weights_state()` (a saved run): no weight file needed."""
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten; do not consume RNG
            network = MobileNetV2()
        result = network.load_state_dict(state, strict=False)
        needed = STAGE_LAST_FEATURE[checked_stages(stages)[-1]]
        missing = [k for k in result.missing_keys if k.startswith("features.") and int(k.split(".")[1]) <= needed]
        if result.unexpected_keys or missing:
            raise ConfigError(f"saved backbone weights do not match stages {list(stages)} (missing {missing[:3]})")
        return cls(stages, network.eval(), micro_batch)

    def weights_state(self) -> dict[str, torch.Tensor]:
        """The truncated network's weights with torchvision's key names (unfused)."""
        return dict(self._weights)

    @property
    def channels(self) -> list[int]:
        return [STAGE_CHANNELS[s] for s in self.stages]

    @property
    def strides(self) -> list[int]:
        return [STAGE_STRIDE[s] for s in self.stages]

    def train(self, mode: bool = True) -> "FeatureExtractor":
        # Always frozen: BatchNorm must keep ImageNet running statistics.
        return super().train(False)

    def _forward_one(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalise(images).contiguous(memory_format=torch.channels_last)
        out = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self._taps:
                out.append(x.contiguous())
        return out

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        parts = [self._forward_one(images[i : i + self.micro_batch]) for i in range(0, len(images), self.micro_batch)]
        if len(parts) == 1:
            return parts[0]
        return [torch.cat(level) for level in zip(*parts)]


def build_feature_extractor(config: BackboneConfig, seed: int = 0) -> FeatureExtractor:
    """For `fit`: loads the weight file (or random init with a warning)."""
    checked_stages(config.stages)  # before paying for a weight load
    return FeatureExtractor(config.stages, load_mobilenet_v2(config.weights, seed=seed), config.micro_batch)
