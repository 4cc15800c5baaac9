"""Policy names -> classes, imported lazily (a VLM backend's import cost is paid only when used).
Each class carries its own config dataclass (`cls.Config`), so `rlad grpo --policy NAME` and a
saved run need nothing else to rebuild a policy."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlad.errors import ConfigError

if TYPE_CHECKING:  # the registry itself imports no torch, so `rlad --help` can list the names
    from rlad.policies.base import Policy

_POLICIES = {
    "compact": "rlad.policies.compact.policy:CompactPolicy",
    "hf": "rlad.policies.hf_vlm.policy:HFVLMPolicy",  # Qwen2-VL / Qwen2.5-VL / Qwen3-VL (the `vlm` extra)
}
POLICY_NAMES = tuple(_POLICIES)


def policy_class(name: str) -> type["Policy"]:
    if name not in _POLICIES:
        raise ConfigError(f"unknown policy {name!r}; available: {', '.join(POLICY_NAMES)}")
    module, attr = _POLICIES[name].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("transformers", "peft", "tokenizers"):
            raise ConfigError(f"the {name!r} policy needs the vlm extra: pip install 'rlad[vlm]' "
                              f"(missing module {exc.name!r})") from None
        raise


def policy_from_payload(payload: dict[str, Any], where: str | Path = "") -> "Policy":
    """Rebuild a saved policy (the dict `save_payload` made)."""
    name = payload.get("policy")
    if not name:
        raise ConfigError(f"{where}: does not hold a grounding policy (no 'policy' entry in model.pt)")
    return policy_class(name).from_payload(payload)
