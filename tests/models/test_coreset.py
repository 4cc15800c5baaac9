from __future__ import annotations

import numpy as np
import pytest
import torch

from rlad.models import coreset
from rlad.models.coreset import greedy_coreset, random_projection


def _plain_greedy(points: np.ndarray, count: int, start: int) -> list[int]:
    """The textbook loop in float64: one pass over every row per pick."""
    points = points.astype(np.float64)
    chosen = [start]
    nearest = np.linalg.norm(points - points[start], axis=1)
    while len(chosen) < count:
        nearest[chosen] = -1.0
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return chosen


def test_matches_the_plain_loop_on_2d_points():
    points = np.random.default_rng(0).uniform(0, 10, size=(60, 2))
    assert greedy_coreset(torch.from_numpy(points).float(), 12, start=5).tolist() == _plain_greedy(points, 12, 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lazy_blocks_pick_what_the_plain_loop_picks(seed, monkeypatch):
    # Many small blocks, and missed picks applied a few at a time: every lazy path is taken.
    monkeypatch.setattr(coreset, "PICKS_PER_PRODUCT", 7)
    rng = np.random.default_rng(seed)
    clusters = rng.normal(0, 4, size=(12, 16))
    points = clusters[rng.integers(0, 12, 3000)] + rng.normal(0, 1, size=(3000, 16))
    got = greedy_coreset(torch.from_numpy(points).float(), 150, start=seed, block_rows=64).tolist()
    assert got == _plain_greedy(points, 150, seed)


def test_picks_the_farthest_point_first():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 10.0], [0.5, 0.5]])
    assert greedy_coreset(points, 3, start=0).tolist() == [0, 3, 2]


def test_ties_go_to_the_lowest_row_across_blocks():
    points = torch.zeros(10, 2)
    points[[3, 5, 8]] = torch.tensor([4.0, 0.0])  # three equally far rows, in three blocks of 3
    assert greedy_coreset(points, 2, start=0, block_rows=3).tolist() == [0, 3]


def test_count_and_uniqueness_with_duplicates():
    points = torch.zeros(20, 3)
    points[10:] = 1.0  # two clusters of identical points: distances of 0 everywhere after two picks
    picked = greedy_coreset(points, 15, start=0, block_rows=4)
    assert len(picked) == 15 and len(set(picked.tolist())) == 15
    assert len(greedy_coreset(points, 100)) == 20  # never more than the rows there are
    assert len(greedy_coreset(points, 0)) == 0


def test_random_projection_roughly_preserves_distances():
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(200, 128, generator=rng)
    projected = x @ random_projection(128, 64, seed=0)
    ratio = torch.pdist(projected) / torch.pdist(x)
    assert abs(float(ratio.mean()) - 1.0) < 0.1
