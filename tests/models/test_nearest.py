"""rlad.models.nearest: both search routes give the neighbours of a float64 brute-force search, on data
built to be hard for a bf16 screen (a large common offset, near-ties, duplicates), and the screen
really prunes."""

from __future__ import annotations

import pytest
import torch

from rlad.models import nearest
from rlad.models.nearest import BankSearch, cpu_has_bf16_units


def _brute_force(queries: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distances and indices of the nearest bank row in float64, and each query's relative gap to its
    second-nearest row (where fp32 itself cannot tell two rows apart, any of them is right)."""
    distances = torch.cdist(queries.double(), bank.double())
    two = distances.topk(min(2, bank.shape[0]), dim=1, largest=False).values
    gap = (two[:, -1] - two[:, 0]) / two[:, -1].clamp_min(1e-12)
    return two[:, 0], distances.argmin(1), gap


def _clustered(generator: torch.Generator, rows: int, dim: int, offset: float, spread: float) -> torch.Tensor:
    """Rows around 20 centres far from the origin (like post-ReLU features: large mean, small spread)."""
    centres = torch.randn(20, dim, generator=generator) + offset
    return centres[torch.randint(0, 20, (rows,), generator=generator)] + spread * torch.randn(rows, dim, generator=generator)


CASES = {
    "gaussian": lambda g: (torch.randn(700, 32, generator=g), torch.randn(301, 32, generator=g)),
    "far from the origin": lambda g: (_clustered(g, 700, 128, 30.0, 0.3), _clustered(g, 1000, 128, 30.0, 0.3)),
    "wide dynamic range": lambda g: (torch.randn(500, 64, generator=g) * torch.logspace(-3, 2, 64), torch.randn(257, 64, generator=g) * torch.logspace(-3, 2, 64)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("screen", ["fp32", "bf16"])
@pytest.mark.parametrize("chunk_mb", [64.0, 0.35, 0.001])  # one block, a few equal ones, a row each
def test_both_routes_find_the_brute_force_neighbours(case, screen, chunk_mb, monkeypatch):
    if chunk_mb < 1:  # small blocks everywhere: several query blocks and bank parts in the screen too,
        monkeypatch.setattr(nearest, "SCREEN_ROWS", 64)
        monkeypatch.setattr(nearest, "SCREEN_PART_BYTES", 2**10)
        monkeypatch.setattr(nearest, "REFINE_PAIRS", 5)  # the refine centres its pairs in many runs of slices
    queries, bank = CASES[case](torch.Generator().manual_seed(len(case)))
    want_d, want_i, gap = _brute_force(queries, bank)
    search = BankSearch(bank, screen, chunk_mb=chunk_mb, width=16)
    distances, indices = search.search(queries, with_index=True)
    assert torch.allclose(distances.double(), want_d, rtol=1e-4, atol=1e-5 * float(want_d.max()))
    resolvable = gap > 1e-4
    assert resolvable.float().mean() > 0.5
    assert torch.equal(indices[resolvable], want_i[resolvable])
    alone, none = search.search(queries)  # without indices: the same distances
    assert none is None and torch.equal(alone, distances)


@pytest.mark.parametrize("screen", ["fp32", "bf16"])
def test_near_ties_and_duplicates_keep_the_exact_nearest_row(screen):
    """Bank rows 2e-3 apart (and exact copies): fp32 tells them apart, the bf16 screen's error bound
    is hundreds of times larger, yet the row returned is the nearest one, and its distance is the
    fp32 distance (measured directly, not through the expansion ||q||^2 + ||m||^2 - 2 q.m, which
    loses about 2e-4 of it here: the queries are 20x closer to their neighbour than to the mean)."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(200, 96, generator=g)
    bank = torch.cat([base, base + 2e-3 * torch.randn(200, 96, generator=g), base[:10]])
    queries = base[torch.randint(0, 200, (500,), generator=g)] + 0.05 * torch.randn(500, 96, generator=g)
    want_d, want_i, gap = _brute_force(queries, bank)
    search = BankSearch(bank, screen, width=8)
    distances, indices = search.search(queries, with_index=True)
    returned_row = (queries.double() - bank.double()[indices]).norm(dim=1)
    assert torch.allclose(distances.double(), returned_row, rtol=1e-6)
    # The expansion ||q||^2 + ||m||^2 - 2 q.m that ranks the rows in fp32 (both routes) rounds about
    # eps sqrt(D) (||q||^2 + ||m||^2) away (`slack`, with a factor 4): rows nearer each other than that
    # are ties for fp32, any of them is right, and the one returned is no farther than that.
    centred_sq = lambda rows: (rows - search.mean).double().square().sum(1)
    slack = 4 * (bank.shape[1] + 2) ** 0.5 * 2.0**-24 * (centred_sq(queries) + centred_sq(bank).max())
    second = want_d / (1 - gap)
    resolvable = second.square() - want_d.square() > slack
    assert resolvable.float().mean() > 0.7 and torch.equal(indices[resolvable], want_i[resolvable])
    assert torch.allclose(distances.double()[resolvable], want_d[resolvable], rtol=1e-6)
    assert bool((returned_row.square() - want_d.square() <= slack).all())
    if screen == "bf16":  # the case is hard for the screen: its error exceeds the gaps it must resolve
        squared_gap = 2 * want_d.square() * gap
        error = search._input_error((queries - search.mean).norm(dim=1))
        assert (error > 100 * squared_gap).float().mean() > 0.9


def test_the_screen_leaves_few_slices_to_measure():
    g = torch.Generator().manual_seed(6)
    bank = _clustered(g, 4096, 128, 5.0, 0.5)
    queries = bank[:512] + 0.05 * torch.randn(512, 128, generator=g)
    search = BankSearch(bank, "bf16", width=64)
    pairs = search._candidate_slices(queries - search.mean)
    per_query = len(pairs) / len(queries)
    assert 1.0 <= per_query < 0.25 * search.slices


def test_auto_follows_the_cpu_and_bad_input_is_refused(monkeypatch):
    bank = torch.randn(10, 4)
    assert BankSearch(bank, "auto").screened == cpu_has_bf16_units()
    assert not BankSearch(bank, "fp32").screened and BankSearch(bank, "bf16").screened
    with pytest.raises(ValueError, match="screen"):
        BankSearch(bank, "fp16")
    with pytest.raises(ValueError, match="empty"):
        BankSearch(torch.zeros(0, 4))


@pytest.mark.parametrize("columns", [10, 128, 1000, 10_000])
def test_row_argmin_is_argmin(columns):
    """The run-wise argmin of the fp32 route returns `argmin(1)`, wherever the minimum sits: inside a
    run, in the ragged tail after the last whole run, or in the first or last column."""
    g = torch.Generator().manual_seed(columns)
    block = torch.randn(300, columns, generator=g)
    rows = torch.arange(300)
    planted = torch.randint(0, columns, (300,), generator=g)
    planted[:4] = torch.tensor([0, columns - 1, min((columns // 64) * 64, columns - 1), columns // 2])
    block[rows, planted] = -10.0 - torch.rand(300, generator=g)
    assert torch.equal(nearest.row_argmin(block), block.argmin(1))
    assert torch.equal(nearest.row_argmin(block, width=7), block.argmin(1))


@pytest.mark.parametrize(
    "text, megabytes",
    [("32768K\n", 24.0), ("8192K", 6.0), ("2M", 4.0), ("256M", 32.0), ("33554432", 24.0), ("", 4.0), ("lots", 4.0), (None, 4.0)],
)
def test_the_automatic_block_fits_three_quarters_of_the_last_level_cache(tmp_path, text, megabytes):
    cache = tmp_path / "size"
    if text is not None:
        cache.write_text(text)
    assert nearest.distance_block_mb(cache) == megabytes


def test_block_size_zero_means_automatic(monkeypatch):
    monkeypatch.setattr(nearest, "distance_block_mb", lambda: 0.01)
    assert BankSearch(torch.randn(10, 4), "fp32", chunk_mb=0).chunk_mb == 0.01
    assert BankSearch(torch.randn(10, 4), "fp32", chunk_mb=2.0).chunk_mb == 2.0
