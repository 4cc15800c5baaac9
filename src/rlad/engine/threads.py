"""Torch CPU thread count for one block of work."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def torch_threads(n: int):
    """Run a block with `n` torch threads (0 = leave as is), then restore the previous setting."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
