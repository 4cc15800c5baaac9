"""ResNet-18 and Wide ResNet-50-2 in plain PyTorch, with torchvision's parameter names.

The backbones of the PaDiM paper (ResNet-18) and the PatchCore paper (Wide ResNet-50-2). As with
MobileNetV2 (`rlad.models.backbones`), torchvision is not imported: the module tree reproduces its
layout (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`, ...) so torchvision's
ImageNet state dicts load with `strict=True`. Feature levels follow timm's numbering, which the
anomaly-detection literature uses: 0 = the stem's activation (stride 2), 1..4 = layer1..layer4
(strides 4, 8, 16, 32); PatchCore's paper takes layer2 + layer3 (stages 2, 3), PaDiM's layer1-3.
The stride-2 convolution of a bottleneck sits on its 3x3 conv (torchvision's "ResNet v1.5").
"""

from __future__ import annotations

import torch
import torch.nn as nn

# Output channels of layer1..4 before the bottleneck's expansion, and blocks per layer.
_LAYER_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, downsample: nn.Module | None = None,
                 base_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, downsample: nn.Module | None = None,
                 base_width: int = 64):
        super().__init__()
        inner = int(width * (base_width / 64.0))  # the "wide" variants widen only the 3x3 conv's channels
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet (v1.5) for ImageNet; `state_dict()` keys equal torchvision's."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int],
                 base_width: int = 64, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        for index, (width, blocks) in enumerate(zip(_LAYER_WIDTHS, layers)):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or in_channels != width * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(in_channels, width * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(width * block.expansion),
                )
            modules = [block(in_channels, width, stride, downsample, base_width)]
            in_channels = width * block.expansion
            modules += [block(in_channels, width, 1, None, base_width) for _ in range(1, blocks)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*modules))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_random()

    def _init_random(self) -> None:
        # torchvision's scheme, so a random backbone here behaves like an untrained one there.
        if self.conv1.weight.is_meta:
            return  # shapes only (weights about to be loaded): drawing them would cost seconds
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stem_and_layers(self) -> list[tuple[str, nn.Module]]:
        """The modules of the forward pass up to layer4, in order, with their torchvision names."""
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return [(name, getattr(self, name)) for name in names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, module in self.stem_and_layers():
            x = module(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18() -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2))


def wide_resnet50_2() -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), base_width=128)


# Index into `stem_and_layers()` of the module after which each stage's output is taken.
RESNET_STAGE_LAST = {0: 2, 1: 4, 2: 5, 3: 6, 4: 7}
RESNET_STAGE_STRIDE = {0: 2, 1: 4, 2: 8, 3: 16, 4: 32}
RESNET18_CHANNELS = {0: 64, 1: 64, 2: 128, 3: 256, 4: 512}
WIDE_RESNET50_2_CHANNELS = {0: 64, 1: 256, 2: 512, 3: 1024, 4: 2048}
