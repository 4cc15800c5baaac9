"""Checkpoint and resume for training loops: one helper instead of one hand-written dict per loop.

A loop names the objects whose state must survive a kill (modules, policies, optimizers, NumPy and
torch generators, anything with `state_dict`/`load_state_dict`) once; `restore()` loads the run's
newest checkpoint of that stage into them and returns the plain values saved beside them (step
counters, histories), and `save(number, **values)` writes one atomic checkpoint. The checkpoint is a
flat dict keyed by those names plus "stage", so a stage never resumes from another stage's file.
"""

from __future__ import annotations

from typing import Any


def _state_of(obj: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(obj, np.random.Generator):
        return obj.bit_generator.state
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    return obj.state_dict()


def _load_into(obj: Any, state: Any) -> None:
    import numpy as np
    import torch

    if isinstance(obj, np.random.Generator):
        obj.bit_generator.state = state
    elif isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


class TrainingState:
    """The resumable state of one training stage of a run (`run` None: nothing is saved or loaded)."""

    def __init__(self, run, stage: str, **stateful: Any):
        self.run, self.stage = run, stage
        self.stateful = {name: obj for name, obj in stateful.items() if obj is not None}

    def restore(self) -> dict:
        """Load the newest checkpoint of this stage into the stateful objects; the other values saved
        with it ({} when there is none, i.e. a fresh start)."""
        if self.run is None:
            return {}
        state = self.run.latest_checkpoint()
        if state is None or state.get("stage") != self.stage:
            return {}
        for name, obj in self.stateful.items():
            if state.get(name) is not None:
                _load_into(obj, state[name])
        return {key: value for key, value in state.items() if key not in self.stateful and key != "stage"}

    def save(self, number: int, **values: Any) -> None:
        """One checkpoint, named by `number` (the step or epoch it was taken after)."""
        if self.run is None:
            return
        state = {"stage": self.stage, **{name: _state_of(obj) for name, obj in self.stateful.items()}, **values}
        self.run.save_checkpoint(state, step=number)
