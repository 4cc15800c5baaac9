"""Shared by the policy tests: one torch thread (the compact head's ops are small, and on a shared
2-core machine two threads spin against other processes and run up to ten times slower) and a
small compact grounder (`make_policy(**config changes)`: random trunk, 64 px, 16 bins)."""

import pytest
import torch

from rlad.policies.compact.config import CompactConfig
from rlad.policies.compact.policy import CompactPolicy

SIZE = 64  # the side of the square pairs (tests/conftest.py) and of the policy's input


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _make_policy(**changes) -> CompactPolicy:
    changes.setdefault("weights", "random")
    return CompactPolicy(CompactConfig(image_size=SIZE, width=16, project=8, bins=16, **changes))


@pytest.fixture
def make_policy():
    return _make_policy
