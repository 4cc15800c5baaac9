"""Task names -> task classes (`rlad grpo --task NAME` and saved runs name their task)."""

from __future__ import annotations

import importlib

from rlad.errors import ConfigError

_TASKS = {"grounding": "rlad.tasks.grounding:GroundingTask", "mcq": "rlad.tasks.mcq:MCQTask"}
TASK_NAMES = tuple(_TASKS)


def get_task(name: str):
    """A fresh task object by name."""
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(TASK_NAMES)}")
    module, attr = _TASKS[name].split(":")
    return getattr(importlib.import_module(module), attr)()
