"""The compact grounder's settings (`--set policy.KEY=VALUE`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlad.config import raise_if_problems
from rlad.errors import ConfigError


@dataclass
class CompactConfig:
    image_size: int = 256
    """Side of the square both images are resized to before the trunk (multiple of 16)."""
    weights: str = "imagenet"
    """The frozen MobileNetV2 trunk's weights: imagenet (torchvision's, resolved as every backbone's:
    rlad.models.weights) | random (tests) | a path to a mobilenet_v2 state-dict file."""
    stages: list[int] = field(default_factory=lambda: [1, 2, 4])
    """Trunk stages compared (rlad.models.backbones numbering: 1 = stride 4, 2 = stride 8, 4 = stride 16)."""
    width: int = 32
    """Channels of the fused comparison map and of the coordinate heads."""
    project: int = 0
    """Channels of a learned shared projection of both images compared per stage (|Pq - Pr|, Pq * Pr);
    0 = the fixed comparisons only, which transferred better to unseen domains (docs/grounding.md)."""
    bins: int = 32
    """Quantisation levels per axis for box coordinates."""
    temperature: float = 1.0
    """Sampling temperature (log-probs are computed at the same temperature, as TRL does)."""
    seed: int = 0
    """Seed of the head's initialisation (and of a random trunk)."""

    def validate(self) -> "CompactConfig":
        from rlad.models.backbones import checked_stages

        problems = [
            None if self.image_size >= 32 and self.image_size % 16 == 0
            else f"policy.image_size must be a multiple of 16 and >= 32, got {self.image_size}",
            None if 2 <= self.bins <= 1000 else f"policy.bins must be in 2..1000, got {self.bins}",
            None if self.width >= 4 and self.project >= 0
            else f"policy.width must be >= 4 and policy.project >= 0, got {self.width}, {self.project}",
            None if self.temperature > 0 else f"policy.temperature must be > 0, got {self.temperature}",
        ]
        try:
            self.stages = checked_stages(self.stages)
        except ConfigError:
            problems.append(f"policy.stages={self.stages}: give distinct stage numbers from 0..6, e.g. [1, 2, 4]")
        raise_if_problems(problems)
        return self

    @property
    def grid(self) -> int:
        return self.image_size // 8
