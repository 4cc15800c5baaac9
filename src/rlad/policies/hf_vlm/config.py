"""The VLM policy's settings (`--set policy.KEY=VALUE`; `--model PATH` sets `policy.model`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rlad.config import raise_if_problems

DTYPES = ("auto", "float32", "bfloat16", "float16")


def looks_like_hub_id(name: str) -> bool:
    """"owner/name" (what the hub takes), as opposed to a local path."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


@dataclass
class HFVLMConfig:
    model: str = ""
    """A local Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint folder (or a hub id where there is network)."""
    lora: bool = True
    """Train LoRA adapters (the KL reference is then the model with the adapter disabled, no second copy);
    false = full fine-tuning of the language model, as in the paper (a frozen copy is the reference)."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    """0 keeps sampling-time and training-time log-probs of the same tokens equal (the ratio starts at 1)."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Projection names in the language model's layers that get adapters."""
    freeze_vision: bool = True
    """Keep the vision tower fixed, as the paper does."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about 30% more time)."""
    dtype: str = "auto"
    """auto = bfloat16 on CUDA, float32 on CPU; or float32 / bfloat16 / float16."""
    device: str = "auto"
    """auto = this process's CUDA device when there is one, else cpu."""
    max_new_tokens: int = 256
    """Completion length limit (the paper: 256); longer answers are truncated and left out of the loss."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are computed at the same temperature."""
    min_pixels: int = 0
    """Image pixel budget, lower bound (0 = the processor's own setting)."""
    max_pixels: int = 0
    """Image pixel budget, upper bound (0 = the processor's own); caps prompt length and memory."""
    generation_batch: int = 0
    """Sequences per `generate` call (0 = all of a step's completions at once)."""
    seed: int = 0
    """Seed of new LoRA adapters' initialisation."""

    def validate(self) -> "HFVLMConfig":
        raise_if_problems([
            None if self.model else "policy.model is empty: give a checkpoint folder with --model PATH",
            None if not self.model or Path(self.model).expanduser().exists() or looks_like_hub_id(self.model)
            else f"policy.model {self.model}: no such checkpoint folder",
            None if self.lora_r >= 1 and self.lora_alpha > 0 else "policy.lora_r must be >= 1 and lora_alpha > 0",
            None if 0 <= self.lora_dropout < 1 else f"policy.lora_dropout must be in [0, 1), got {self.lora_dropout}",
            None if self.lora_targets else "policy.lora_targets is empty",
            None if not (self.lora and not self.freeze_vision)
            else "policy.freeze_vision=false trains the vision tower, which needs full fine-tuning (policy.lora=false)",
            None if self.dtype in DTYPES else f"policy.dtype {self.dtype!r} is not one of {', '.join(DTYPES)}",
            None if self.max_new_tokens >= 1 else f"policy.max_new_tokens must be >= 1, got {self.max_new_tokens}",
            None if self.temperature > 0 else f"policy.temperature must be > 0, got {self.temperature}",
            None if self.min_pixels >= 0 and self.max_pixels >= 0 else "policy.min_pixels/max_pixels must be >= 0",
            None if not (self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels)
            else f"policy.min_pixels ({self.min_pixels}) exceeds policy.max_pixels ({self.max_pixels})",
            None if self.generation_batch >= 0 else "policy.generation_batch must be >= 0",
        ])
        return self
