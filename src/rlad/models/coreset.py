"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling), exact and lazy.

Greedy k-center picks, one after another, the row farthest from everything picked so far. Done
plainly, every pick is one pass over the whole pool (a matrix-vector product and a minimum over, say,
100,000 x 64 floats): 10,000 picks stream the pool 10,000 times, memory bound.

Here the pool is cut into blocks of rows and evaluated lazily. A row's distance to the picks can only
fall as picks are added, so the largest distance a block held when it was last brought up to date is
an upper bound on its rows' distances now. After each pick, only the blocks whose bound reaches the
largest distance known to be exact are brought up to date, with all the picks they missed in one
matrix product; the others wait. The pick is the same row the plain algorithm picks (every block that
could hold the farthest row is exact when the pick is made; ties go to the lowest row), but the
arithmetic runs as matrix products with the pool read a few rows at a time: measured 3-4x faster on
a 100,000 x 64 pool of magnetic-tile features. Distances are computed as |x|^2 + (|c|^2 - 2 x.c), as
before, in a different summation order, so a pick may differ from the plain loop's where two rows'
distances agree to float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rlad.engine import progress

BLOCK_ROWS = 1024
"""Rows per block: 10,000 picks over magnetic tile's pool took 5.8 s (1024) against 6.0 s (512) and 7.7 s
(2048) in a first version of this loop (1 thread, a busy host)."""
PICKS_PER_PRODUCT = 1024
"""Missed picks applied to a block per matrix product, which bounds its distance block (4 MB)."""


def random_projection(dim_in: int, dim_out: int, seed: int) -> torch.Tensor:
    """A (dim_in, dim_out) Gaussian matrix scaled to preserve squared distances in expectation."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim_in, dim_out, generator=generator) / math.sqrt(dim_out)


def greedy_coreset(features: torch.Tensor, count: int, start: int = 0, show_progress: bool = False,
                   block_rows: int = BLOCK_ROWS) -> torch.Tensor:
    """Indices of `count` rows chosen by greedy k-center selection (each pick is the row farthest
    from everything picked so far, the lowest row among equals), starting from row `start`."""
    n = features.shape[0]
    count = int(min(max(count, 0), n))
    if count == 0:
        return torch.zeros(0, dtype=torch.long)
    rows = features.float().contiguous()
    dim = rows.shape[1]
    squared_norms = rows.square().sum(1)
    # |x - c|^2 = |x|^2 + (|c|^2 - 2 x.c); the bracket for many picks at once is one product of
    # [x, 1] with the picks' columns [-2c; |c|^2].
    augmented = torch.cat([rows, torch.ones(n, 1)], dim=1)
    pick_columns = torch.empty(dim + 1, count)
    nearest = torch.full((n,), math.inf)  # squared distance of each row to the picks it has seen
    n_blocks = (n + block_rows - 1) // block_rows
    bound = np.full(n_blocks, math.inf)  # the largest `nearest` of each block when last brought up to date
    farthest = np.zeros(n_blocks, dtype=np.int64)  # that block's row at `bound`
    seen = np.zeros(n_blocks, dtype=np.int64)  # picks [0, seen) applied to each block

    def bring_up_to_date(block: int, picks: int) -> None:
        lo, hi = block * block_rows, min(n, (block + 1) * block_rows)
        block_nearest = nearest[lo:hi]
        for first in range(int(seen[block]), picks, PICKS_PER_PRODUCT):
            last = min(picks, first + PICKS_PER_PRODUCT)
            closest = torch.mm(augmented[lo:hi], pick_columns[:, first:last]).amin(1).add_(squared_norms[lo:hi])
            torch.minimum(block_nearest, closest, out=block_nearest)
        at = int(torch.argmax(block_nearest))
        bound[block], farthest[block], seen[block] = float(block_nearest[at]), lo + at, picks

    selected = torch.empty(count, dtype=torch.long)
    index = int(start)
    bar = progress(total=count, desc="coreset") if show_progress else None
    for i in range(count):
        selected[i] = index
        pick_columns[:dim, i] = rows[index] * -2.0
        pick_columns[dim, i] = squared_norms[index]
        nearest[index] = -math.inf  # never picked twice, even among duplicates at distance 0
        if bar is not None and (i % 256 == 255 or i == count - 1):
            bar.update(i + 1 - bar.n)
        if i + 1 == count:
            break
        while True:  # until every block that could hold the farthest row (or tie with it) is exact
            stale = np.flatnonzero((seen <= i) & (bound >= bound.max()))
            if len(stale) == 0:
                break
            for block in stale:
                bring_up_to_date(int(block), i + 1)
        index = int(farthest[int(np.argmax(bound))])
    if bar is not None:
        bar.close()
    return selected
