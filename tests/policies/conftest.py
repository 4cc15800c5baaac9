"""One torch thread for the policy tests: the compact head's ops are small, and on a shared 2-core
machine two threads spin against other processes and run up to ten times slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
