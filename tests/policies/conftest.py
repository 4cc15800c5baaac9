"""Shared by the policy tests: one torch thread (the compact head's ops are small, and on a shared
2-core machine two threads spin against other processes and run up to ten times slower) and a
generated, trivially learnable pair set (`square_pairs`)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlad.data.pairs.records import PairRecord

SIZE = 64


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_square_pairs(root: Path, n: int, seed: int = 0) -> list[PairRecord]:
    """Flat noisy references; the query is its reference plus a bright square in one of four
    corners (or nothing, for every fourth pair): a trivially learnable difference."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    corners = [(4, 4), (36, 4), (4, 36), (36, 36)]
    records = []
    for i in range(n):
        base = np.clip(0.45 + rng.normal(0, 0.03, size=(SIZE, SIZE, 3)), 0, 1)
        query = base.copy()
        box = (0, 0, 0, 0)
        if i % 4 != 3:
            x, y = corners[int(rng.integers(4))]
            query[y:y + 24, x:x + 24] = 0.95
            box = (x, y, x + 24, y + 24)
        for name, image in (("r", base), ("q", query)):
            Image.fromarray((image * 255).astype(np.uint8)).save(root / f"{i:03d}{name}.png")
        records.append(PairRecord(f"sq{i}", str(root / f"{i:03d}r.png"), str(root / f"{i:03d}q.png"), box,
                                  (SIZE, SIZE), (SIZE, SIZE), "squares", "square" if any(box) else "good"))
    return records


@pytest.fixture(scope="session")
def square_pairs(tmp_path_factory):
    return write_square_pairs(tmp_path_factory.mktemp("squares"), 16)
