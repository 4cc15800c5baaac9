"""The Task contract: everything the GRPO loop needs that depends on the task, and nothing else.

A task turns its records (a pair, a question, ...) into `Prompt`s a policy reads and into the
`RewardTarget`s the rewards compare completions with (converted into the policy's conventions,
e.g. a box into its coordinate mode), names its rewards and which of them are the *primary* ones
(their values drive DifferAD-R1's difficulty weights and group resampling), and may add task
statistics to each log line. The loop in `rlad.rl.loop` sees only this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

from rlad.errors import ConfigError
from rlad.rl.rewards import RewardTarget
from rlad.rl.rollout import Completion, Prompt


class Task(ABC):
    name: ClassVar[str]
    default_rewards: ClassVar[tuple[str, ...]]
    primary_rewards: ClassVar[frozenset[str]]
    """Rewards in [0, 1] whose sum over the configured ones drives difficulty weights and resampling."""
    primary_kind: ClassVar[str] = "primary"
    """How messages name the primary rewards ("localization" for grounding)."""
    grpo_defaults: ClassVar[dict] = {}
    """`GRPOConfig` fields whose defaults this task's recipe changes (before --config and --set)."""

    @abstractmethod
    def load(self, path: str | Path) -> list:
        """The task's records from a file (one-line errors naming the file and line on bad input)."""

    @abstractmethod
    def prompt(self, record: Any) -> Prompt: ...

    @abstractmethod
    def target(self, record: Any, policy: Any) -> RewardTarget:
        """The ground truth of `record` in `policy`'s conventions (what rewards compare with)."""

    def rollout_stats(self, groups: Sequence[Sequence[Completion]], targets: Sequence[RewardTarget]) -> dict:
        """Task statistics of freshly sampled groups for the log line (e.g. mean IoU)."""
        return {}

    def check_rewards(self, names: Sequence[str], needs_primary: bool) -> None:
        """Refuse reward lists this task cannot be trained with (unknown names: `GRPOConfig.validate`)."""
        if needs_primary and not set(names) & self.primary_rewards:
            raise ConfigError(f"grpo.reweighting/resampling need a {self.primary_kind} reward "
                              f"({', '.join(sorted(self.primary_rewards))}) in grpo.rewards, got {list(names)}")
