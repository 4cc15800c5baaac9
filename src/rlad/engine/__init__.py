"""Run directories, atomic checkpoints and resumable training state, seeding, threads, progress bars."""

from rlad.engine.progress import progress, status
from rlad.engine.run import RunDir, atomic_torch_save, atomic_write_bytes
from rlad.engine.seed import seed_everything
from rlad.engine.threads import torch_threads
from rlad.engine.training_state import TrainingState

__all__ = ["RunDir", "TrainingState", "atomic_torch_save", "atomic_write_bytes", "progress", "seed_everything",
           "status", "torch_threads"]
