"""Run directories, atomic checkpoints, seeding, progress bars and logging."""

from rlad.engine.progress import progress, status
from rlad.engine.run import RunDir, atomic_write_bytes, atomic_torch_save
from rlad.engine.seed import seed_everything

__all__ = ["RunDir", "atomic_torch_save", "atomic_write_bytes", "progress", "seed_everything", "status"]
