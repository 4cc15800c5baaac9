"""Nearest-neighbour search in a fixed memory bank: the distance of every query row to its nearest bank
row (PatchCore's maps, and NBS's PatchCore prior), with the answer of an exact fp32 search.

Two routes, chosen by `screen`:

- "fp32": the (queries x bank) block of ||m||^2 - 2 q.m (centred rows, one product:
  `augmented_bank`), in chunks of at most `chunk_mb` (0: `distance_block_mb`, sized to the CPU's
  last-level cache), and the position of each row's minimum (`row_argmin`: PyTorch's argmin over
  10,000 columns had cost a third as much as the product on an AVX2 CPU).
- "bf16": on CPUs with bf16 matrix units (AMX, AVX512-BF16) a bf16 matrix product runs several times
  faster than fp32. It screens the bank: the error of every screened entry has a bound computed from
  the norms (below), so every bank slice (`width` consecutive rows) whose best screened entry is more
  than that bound below the row's best cannot hold the nearest neighbour. The slices left (a few per
  query) are measured in fp32, so the result is the nearest neighbour of an fp32 search, not an
  approximation of it (tests/models/test_nearest.py checks it against float64 brute force, near-ties included).
- "auto": bf16 where the CPU has bf16 units, else fp32.

Either route returns the distance to the row it picked measured directly, ||q - m||: the expansion
that ranks the rows loses about eps sqrt(D) (||q||^2 + ||m||^2) to cancellation, most of a distance's
precision when the neighbour is much nearer than the rows' norms (the test's near-ties lost 2e-4).

The screening bound. Rows are centred on the bank's mean (distances do not change; norms, and with
them the error, shrink). The screened value of query q and bank row m is y = fl_bf16(q~.m~ + h + l)
with q~, m~ the bf16 roundings, h + l the bf16 hi/lo split of -||m||^2/2, accumulated in fp32; its
exact counterpart x = q.m - ||m||^2/2 = (||q||^2 - ||q - m||^2) / 2 is largest at the nearest
neighbour. Before the final rounding, |y - x| <= E = (2u + 2u^2 + 2g) ||q|| M + (u^2 + 2g) M^2 / 2,
with u = 2^-8 (bf16), g = (D + 2) 2^-24 (fp32 accumulation over D + 2 terms) and M the largest
centred bank norm (Cauchy-Schwarz bounds sum |q_k m_k| by ||q|| M). Rounding to bf16 is monotone
with relative error u, so the nearest neighbour's screened value is at least
g1 - (2E + 2u (|g1| (1 + 2u) + 2E)) where g1 is the row's best screened value; `_margin` adds 1%.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

PRECISIONS = ("auto", "bf16", "fp32")
"""The choices of a bf16 speed-up: `uses_bf16` says which applies on this CPU."""
SCREENS = PRECISIONS
REFINE_PAIRS = 4096
"""Query-slice pairs centred at once in the fp32 refine: 2 MB of 128-d rows, a core's cache."""
# Queries per screened block and bank columns per part: a (1024 x part) bf16 output block of about
# 2 MB stays in a 2 MB L2 with its inputs; measured 28% faster than 256 queries x 0.5 MB parts.
SCREEN_ROWS = 1024
SCREEN_PART_BYTES = 2**18
BF16_UNIT_ROUNDOFF = 2.0**-8
FP32_UNIT_ROUNDOFF = 2.0**-24


def _split_bf16(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """values ~ hi + lo in bf16 (about 16 significant bits between them)."""
    hi = values.bfloat16()
    return hi, (values - hi.float()).bfloat16()


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_units() -> bool:
    """True on x86 CPUs that multiply bf16 in hardware (AMX-BF16 or AVX512-BF16), where oneDNN's bf16
    matrix product is several times faster than fp32; elsewhere bf16 is emulated and slower."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def uses_bf16(choice: str) -> bool:
    """Whether a `PRECISIONS` choice means bf16 here: "bf16", or "auto" on a CPU with bf16 units."""
    return choice == "bf16" or (choice == "auto" and cpu_has_bf16_units())


def augmented_bank(centred: torch.Tensor) -> torch.Tensor:
    """The (D + 1, N) columns [-2 m; ||m||^2] of centred bank rows m: the rows [q, 1] times them give
    ||m||^2 - 2 q.m (||q - m||^2 less ||q||^2) in one matrix product that writes its block once; adding
    the norms as a bias writes the block, then reads and writes it again (5-15% of the fp32 search in a
    one-off micro-benchmark). Doubling is exact in fp32. Shared by `BankSearch` and the exported graph."""
    return torch.cat([-2.0 * centred, centred.square().sum(1, keepdim=True)], 1).t().contiguous()


@functools.lru_cache(maxsize=4)
def distance_block_mb(cache_file: str | Path = "/sys/devices/system/cpu/cpu0/cache/index3/size") -> float:
    """The fp32 search's automatic block size: three quarters of the last-level cache, 4 to 32 MB (4 MB
    where the size is unknown). The block must stay in that cache between the product that writes it
    and the minimum that reads it (a block larger than the cache is slower again), and the product
    runs faster on more rows at once than the 104 rows of a 10,000-row bank that 4 MB holds
    (docs/nbs.md, Cost: PatchCore's predict went from 1.16-1.32x to 1.37-1.57x the speed of 35e3fad)."""
    try:
        text = Path(cache_file).read_text().strip().upper()
        size = float(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]] if text[-1] in "KM" else float(text)
    except (OSError, ValueError, IndexError):
        return 4.0
    return min(32.0, max(4.0, 0.75 * size / 2**20))


def row_argmin(block: torch.Tensor, width: int = 64) -> torch.Tensor:
    """`block.argmin(1)` of a (rows, columns) block, several times faster on a CPU: the minimum of each
    run of `width` columns (a contiguous reduction without indices, which vectorises), the best run of
    each row, then the argmin inside that run alone. An exact tie may resolve to another equal entry."""
    rows, columns = block.shape
    runs = columns // width
    if runs < 2:
        return block.min(1).indices
    head = block[:, : runs * width].unflatten(1, (runs, width))
    run_min = head.amin(2)
    best_run = run_min.argmin(1)
    index = best_run * width + head[torch.arange(rows), best_run].argmin(1)
    if runs * width < columns:  # the ragged tail
        tail = block[:, runs * width :].min(1)
        take = tail.values < run_min.gather(1, best_run.unsqueeze(1)).squeeze(1)
        index = torch.where(take, runs * width + tail.indices, index)
    return index


def compact_order(rows: torch.Tensor, width: int) -> torch.Tensor:
    """A permutation of `rows` whose consecutive runs of `width` are compact: split at a multiple of
    `width` along the top principal direction, recursively. Compact slices let the screen rule whole
    slices out, and measuring a query against a slice relative to the slice's own mean keeps the
    fp32 expansion of ||q - m||^2 accurate near the neighbour."""
    runs, done = [torch.arange(rows.shape[0])], []
    while runs:
        ids = runs.pop()
        if len(ids) <= width:
            done.append(ids)
            continue
        part = rows[ids] - rows[ids].mean(0)
        direction = part[part.square().sum(1).argmax()]
        for _ in range(4):  # power iteration: close enough to the top principal direction, and cheap
            direction = part.t() @ (part @ direction)
            direction /= direction.norm().clamp_min(1e-30)
        ids = ids[torch.argsort(part @ direction, stable=True)]
        cut = width * max(1, round(len(ids) / (2 * width)))
        runs += [ids[cut:], ids[:cut]]
    return torch.cat(done)


class BankSearch:
    """Nearest bank row of each query row (Euclidean). `search` returns (distances, indices or None)."""

    def __init__(self, bank: torch.Tensor, screen: str = "auto", chunk_mb: float = 0.0, width: int = 128):
        if screen not in SCREENS:
            raise ValueError(f"screen must be one of {SCREENS}, got {screen!r}")
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError("BankSearch: the memory bank must be a non-empty (rows, dim) matrix")
        self.bank = bank.float().contiguous()
        self.sq_norms = self.bank.square().sum(1)
        self.chunk_mb = float(chunk_mb) if chunk_mb > 0 else distance_block_mb()
        # Distances do not change when everything moves by the bank's mean; the fp32 expansion below
        # loses less to cancellation on centred rows.
        self.mean = self.bank.mean(0)
        self.screened = uses_bf16(screen)
        if self.screened:
            self._prepare_screen(width)
        else:
            self.augmented_t = augmented_bank(self.bank - self.mean)

    # --- fp32 ---------------------------------------------------------------------------------------
    def _search_fp32(self, centred: torch.Tensor) -> torch.Tensor:
        """Index of each query's nearest bank row."""
        count = centred.shape[0]
        most = max(1, int(self.chunk_mb * 2**20 // (4 * self.bank.shape[0])))
        rows = -(-count // -(-count // most))  # equal blocks: no small last one
        indices = torch.empty(count, dtype=torch.long)
        # ||q - m||^2 = ||q||^2 + (||m||^2 - 2 q.m): the first term does not move the minimum.
        augmented = torch.cat([centred, torch.ones(count, 1)], 1)
        block = torch.empty(min(rows, count), self.bank.shape[0])
        for start in range(0, count, rows):
            part = augmented[start : start + rows]
            product = torch.mm(part, self.augmented_t, out=block[: len(part)])
            indices[start : start + len(part)] = row_argmin(product)
        return indices

    # --- bf16 screen + fp32 on the slices it keeps ---------------------------------------------------
    def _prepare_screen(self, width: int) -> None:
        rows, dim = self.bank.shape
        self.rows = rows
        self.width = max(1, min(int(width), rows))
        self.slices = -(-rows // self.width)
        padded = self.slices * self.width
        self.order = compact_order(self.bank, self.width)
        members = self.bank[self.order] - self.mean
        slice_of = torch.arange(rows) // self.width
        self.slice_mean = torch.zeros(self.slices, dim).index_add_(0, slice_of, members)
        self.slice_mean /= torch.bincount(slice_of, minlength=self.slices).unsqueeze(1)
        local = members - self.slice_mean[slice_of]
        self.local_t = local.t().contiguous()
        self.local_sq = local.square().sum(1)

        sq = members.square().sum(1)
        hi, lo = _split_bf16(torch.cat([-0.5 * sq, torch.full((padded - rows,), float("-inf"))]))  # padding never wins
        lo[rows:] = 0.0
        screened = torch.zeros(padded, dim + 4, dtype=torch.bfloat16)
        screened[:rows, :dim] = members.bfloat16()
        screened[:, dim], screened[:, dim + 1], screened[:, dim + 2 :] = hi, lo, 1.0
        # Bank row j (in `order`) is column (j % width) * slices + j // width: a slice's members sit at
        # stride `slices`, so the per-slice maximum reduces over a middle axis, which vectorises.
        screened = screened.view(self.slices, self.width, dim + 4).transpose(0, 1).reshape(padded, dim + 4)
        # (dim + 4, columns) parts, the layout oneDNN reads fastest, each small enough to stay in the
        # core's cache with its output block while a block of queries is screened against it.
        columns = screened.t()
        per_part = max(1, SCREEN_PART_BYTES // (2 * (dim + 4) * self.slices))
        self.screen_parts = [
            columns[:, m * self.slices : min(m + per_part, self.width) * self.slices].contiguous()
            for m in range(0, self.width, per_part)
        ]
        self.max_norm = float(sq.max().sqrt())
        u, g = BF16_UNIT_ROUNDOFF, (dim + 4) * FP32_UNIT_ROUNDOFF
        self._coef_cross = (2 * u + 2 * u * u + 2 * g) * self.max_norm
        self._coef_norms = u * u + 2 * g

    def _input_error(self, query_norms: torch.Tensor, offset: torch.Tensor | float = 0.0) -> torch.Tensor:
        """Bound on |screened - exact| before the final rounding (module docstring)."""
        return self._coef_cross * query_norms + self._coef_norms * (self.max_norm**2 / 2 + query_norms.square() / 2 + offset)

    def _candidate_slices(self, centred_queries: torch.Tensor) -> torch.Tensor:
        """(n, 2) pairs (query row, bank slice) that may hold the row's nearest neighbour."""
        u = BF16_UNIT_ROUNDOFF
        norms = centred_queries.norm(dim=1)
        # Every screened value is -||q - m||^2 / 2 - offset < 0: negative bf16 numbers order like
        # their int16 bit patterns reversed, and integer reductions are the fast ones.
        offset = 4 * self._input_error(norms) + 1e-30
        error = self._input_error(norms, offset)
        hi, lo = _split_bf16(-0.5 * norms.square() - offset)
        screened_queries = torch.cat(
            [centred_queries.bfloat16(), torch.ones(len(norms), 2, dtype=torch.bfloat16), hi[:, None], lo[:, None]], 1
        )
        widest = max(part.shape[1] for part in self.screen_parts)
        block = torch.empty(SCREEN_ROWS, widest, dtype=torch.bfloat16)  # reused: it stays in cache
        pairs = []
        for start in range(0, len(norms), SCREEN_ROWS):
            queries = screened_queries[start : start + SCREEN_ROWS]
            n = len(queries)
            bits = None  # per-slice best so far, as int16 bit patterns (smaller = larger value)
            for part in self.screen_parts:
                out = block[:n, : part.shape[1]]
                torch.matmul(queries, part, out=out)  # bf16, every entry < 0
                part_bits = out.view(torch.int16).view(n, -1, self.slices).amin(1)
                bits = part_bits if bits is None else torch.minimum(bits, part_bits, out=bits)
            slice_best = bits.view(torch.bfloat16).float()
            best = slice_best.amax(1)
            span = error[start : start + n]
            margin = 1.01 * (2 * span + 2 * u * (best.abs() * (1 + 2 * u) + 2 * span)) + 1e-30
            found = (slice_best >= (best - margin).unsqueeze(1)).nonzero()
            found[:, 0] += start
            pairs.append(found)
        return torch.cat(pairs)

    def _search_screened(self, centred: torch.Tensor) -> torch.Tensor:
        """Index of each query's nearest bank row."""
        pairs = self._candidate_slices(centred)
        order = torch.argsort(pairs[:, 1], stable=True)
        rows, slices = pairs[order, 0], pairs[order, 1]
        counts = torch.bincount(slices, minlength=self.slices).tolist()
        # fp32 squared distances of each pair's query to the members of its slice, relative to the
        # slice's mean. The pairs' queries are gathered and centred for runs of slices at once, up to
        # REFINE_PAIRS pairs (they stay in cache while measured): a single image's search is then
        # two operations a slice (its time went to per-slice overhead), a batch's stays cache-sized.
        nearest = torch.empty(len(rows))
        member = torch.empty(len(rows), dtype=torch.long)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        first = 0
        while first < self.slices:
            last = int(np.searchsorted(offsets, offsets[first] + REFINE_PAIRS, side="right")) - 1
            last = min(max(last, first + 1), self.slices)  # slices [first, last), at least one
            begin, end = int(offsets[first]), int(offsets[last])
            local = centred[rows[begin:end]] - self.slice_mean[slices[begin:end]]
            for index in range(first, last):
                start, stop = int(offsets[index]) - begin, int(offsets[index + 1]) - begin
                if stop > start:
                    lo, hi = index * self.width, min((index + 1) * self.width, self.rows)
                    block = torch.addmm(self.local_sq[lo:hi], local[start:stop], self.local_t[:, lo:hi], beta=1.0, alpha=-2.0)
                    torch.min(block, 1, out=(nearest[begin + start : begin + stop], member[begin + start : begin + stop]))
            nearest[begin:end] += local.square().sum(1)
            first = last
        best = torch.full((centred.shape[0],), float("inf")).scatter_reduce_(0, rows, nearest, "amin")
        winners = nearest == best[rows]
        indices = torch.zeros(centred.shape[0], dtype=torch.long)
        indices[rows[winners]] = self.order[member[winners] + slices[winners] * self.width]
        return indices

    # --- entry point ------------------------------------------------------------------------------------
    def search(self, queries: torch.Tensor, with_index: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Q, D) float queries -> (distances (Q,), nearest bank row indices (Q,) when `with_index`)."""
        queries = queries.float()
        centred = queries - self.mean
        indices = self._search_screened(centred) if self.screened else self._search_fp32(centred)
        # Both routes pick the row by the expansion ||q||^2 + ||m||^2 - 2 q.m, whose fp32 value loses
        # about eps * (||q||^2 + ||m||^2) to cancellation: near a neighbour much closer than the rows'
        # norms that is most of the distance's precision. The distance itself is measured directly.
        distances = torch.linalg.vector_norm(queries - self.bank[indices], dim=1)
        return distances, (indices if with_index else None)
