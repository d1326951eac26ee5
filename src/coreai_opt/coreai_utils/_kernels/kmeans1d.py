"""Scalar palettization: 1-D k-means per row, optimal where affordable.

Each row of ``values`` is one group with its own LUT of ``k`` entries.

1. Sort each row (float32) and take prefix sums. In fast mode the values are
   also rounded to ``round_decimals`` decimals (in float64, so nothing
   overflows); rounding merges nearby values, so more rows fit the exact DP.
2. A row whose distinct (rounded) values fit the DP budget is solved exactly by
   the optimal DP (``_dp1d``). The budget depends only on the row length and
   ``k``, which keeps the DP's cost proportional to the data and a row's result
   independent of its batch.
3. Other rows try several starts: the DP optimum over equal-width bins of the
   row (outliers get bins of their own, so the DP lands next to the true
   optimum) and centroids at the quantiles of the cube root of the row's
   histogram (the asymptotically optimal density of levels); rows too short for
   a worthwhile DP try those companded, equal-count and evenly spaced
   centroids. Lloyd iterations and merge/split moves (``_local1d``) improve each
   start, and the best result per row is kept.
4. Fit to the exact values: store the centroids (``to_storage``), replace each
   entry by the stored value nearest the mean of the exact values it wins (this
   never increases the error), and assign every value to its nearest entry.

Every step works row by row, so chunking and threading cannot change the output.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _local1d as local
from ._dp1d import DENSE_LIMIT, optimal_partition

_MAX_ATOMS = 4096
#: DP work allowed per value of a row, in units of one dense-table entry per layer (the dense DP
#: costs k * M^2 units). Rows of at least ``_LONG_ROW`` values are few (whole tensors) and their
#: local optima differ most, so they get more. The divide-and-conquer DP's bookkeeping costs far
#: more per candidate than the dense table; it is only used for rows of ``_HUGE_ROW`` values.
_DP_WORK_PER_VALUE = 8
_DP_WORK_PER_VALUE_LONG = 32
_LONG_ROW = 1 << 17
_HUGE_ROW = 1 << 20
_DIVIDE_AND_CONQUER_COST = 64
_HISTOGRAM_BINS = 64
_SMALL_BATCH = 8


def dp_atom_budget(n_values: int, k: int) -> int:
    """How many atoms the DP may use for a row of ``n_values`` values (0: no DP)."""
    budget = 0
    size = 2 * k
    allowed = (_DP_WORK_PER_VALUE_LONG if n_values >= _LONG_ROW else _DP_WORK_PER_VALUE) * n_values
    while size <= _MAX_ATOMS:
        if size > DENSE_LIMIT and n_values < _HUGE_ROW:
            break
        work = k * size * size if size <= DENSE_LIMIT else _DIVIDE_AND_CONQUER_COST * k * size * np.log2(size)
        if work > allowed:
            break
        budget = size
        size *= 2
    return budget


def _sortable(values: np.ndarray) -> np.ndarray:
    return values if values.dtype == np.float64 else values.astype(np.float32)


def _chunk_starts(n: int, parts: int) -> np.ndarray:
    return (np.arange(parts + 1, dtype=np.int64) * n) // parts


def _uniform_bounds(sorted_rows: np.ndarray, budget: int) -> np.ndarray:
    """Start of each atom when a row is cut into equal-width bins (empty ones dropped), padded with n.

    The finest width whose non-empty bins number at most ``budget`` is used
    (eight trials, each halving the bin count). Equal widths keep every atom's
    spread small in the bulk and give each outlier an atom of its own, which is
    what lets the DP over atoms land next to the true optimum.
    """
    rows, n = sorted_rows.shape
    low = sorted_rows[:, :1].astype(np.float64)
    span = np.maximum(sorted_rows[:, -1:].astype(np.float64) - low, np.finfo(np.float64).tiny)
    bounds = np.full((rows, budget + 1), n, dtype=np.int64)
    pending = np.arange(rows)
    for trial in range(8):
        bins = budget << (7 - trial)  # the last trial has ``budget`` bins, which always fit
        position_in_span = (sorted_rows[pending].astype(np.float64) - low[pending]) / span[pending]  # in [0, 1]
        index = np.minimum((position_in_span * bins).astype(np.int64), bins - 1)
        new = np.ones(index.shape, dtype=bool)
        new[:, 1:] = index[:, 1:] != index[:, :-1]
        fits = new.sum(axis=1) <= budget
        for position, row in zip(np.flatnonzero(fits), pending[fits]):
            starts = np.flatnonzero(new[position])
            bounds[row, : starts.size] = starts
        pending = pending[~fits]
        if pending.size == 0:
            break
    return bounds


def _atoms(sorted_rows: np.ndarray, prefix: np.ndarray, distinct: np.ndarray, budget: int):
    """(counts, sums, squares, bounds) of at most ``budget`` atoms per row, normalised to about [-1, 1].

    A row with at most ``budget`` distinct values gets one atom per distinct value,
    a longer one equal-width bins (``_uniform_bounds``); empty atoms pad the end.
    An atom stands for its values as a point mass at their mean: its own spread is
    the same whatever the partition, so the optimal partition is too.
    """
    rows, n = sorted_rows.shape
    bounds = _uniform_bounds(sorted_rows, budget)
    for r in np.flatnonzero(distinct <= budget):
        starts = np.flatnonzero(np.diff(sorted_rows[r], prepend=-np.inf) != 0)
        bounds[r, : starts.size] = starts
        bounds[r, starts.size :] = n
    counts = np.diff(bounds, axis=1).astype(np.float64)
    totals = np.diff(np.take_along_axis(prefix, bounds, axis=1), axis=1)
    low, high = sorted_rows[:, :1].astype(np.float64), sorted_rows[:, -1:].astype(np.float64)
    center, scale = (low + high) / 2, np.maximum((high - low) / 2, np.finfo(np.float64).tiny)
    sums = (totals - counts * center) / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        squares = np.where(counts > 0, sums * sums / counts, 0.0)
    return counts, sums, squares, bounds


def _monotone_fill(means: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Empty clusters (NaN) take their left neighbour's value (``first`` at the start)."""
    filled = np.fmax.accumulate(np.where(np.isnan(means), -np.inf, means), axis=1)
    return np.where(np.isinf(filled), first, filled)


def _dp_starts(sorted_rows, prefix, distinct, k, budget) -> np.ndarray:
    """Centroids of the optimal partition of each row's atoms."""
    rows, n = sorted_rows.shape
    counts, sums, squares, atom_bounds = _atoms(sorted_rows, prefix, distinct, budget)
    starts = np.take_along_axis(atom_bounds, optimal_partition(counts, sums, squares, k), axis=1)
    bounds = np.concatenate([starts, np.full((rows, 1), n, np.int64)], axis=1)
    _, means = local.run_stats(prefix, np.arange(rows), bounds, np.nan)
    return _monotone_fill(means, sorted_rows[:, :1].astype(np.float64))


def _chunk_means(sorted_rows, prefix, k) -> np.ndarray:
    """Means of k equal-count chunks of each sorted row."""
    rows, n = sorted_rows.shape
    bounds = np.broadcast_to(_chunk_starts(n, k), (rows, k + 1))
    _, means = local.run_stats(prefix, np.arange(rows), bounds, np.nan)
    return _monotone_fill(means, sorted_rows[:, :1].astype(np.float64))


def _evenly_spaced(sorted_rows: np.ndarray, k: int) -> np.ndarray:
    """k centroids evenly spread between each row's extremes."""
    low, high = sorted_rows[:, :1].astype(np.float64), sorted_rows[:, -1:].astype(np.float64)
    return low + (high - low) * (np.arange(k) + 0.5) / k


def _companded_points(sorted_rows: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Values at the given quantiles of the cube root of each row's histogram, (rows, len(fractions)).

    Level density proportional to the cube root of the value density is what
    minimises the squared error of a fine quantizer, so these points spread
    over the tails instead of crowding into the bulk the way plain quantiles do.
    """
    rows = sorted_rows.shape[0]
    bins = max(_HISTOGRAM_BINS, 2 * fractions.size)
    low, high = sorted_rows[:, :1].astype(np.float64), sorted_rows[:, -1:].astype(np.float64)
    edges = low + (high - low) * np.arange(bins + 1) / bins
    below = local.count_le(sorted_rows, np.arange(rows), edges[:, 1:-1])
    below = np.concatenate([np.zeros((rows, 1), np.int64), below, np.full((rows, 1), sorted_rows.shape[1])], axis=1)
    cdf = np.concatenate([np.zeros((rows, 1)), np.cumsum(np.cbrt(np.diff(below, axis=1).astype(np.float64)), axis=1)],
                         axis=1)
    cdf /= cdf[:, -1:]
    located = np.stack([np.searchsorted(cdf[r, 1:], fractions, side="right") for r in range(rows)]) \
        if rows <= _SMALL_BATCH else (cdf[:, None, 1:] <= fractions[None, :, None]).sum(axis=2)
    located = np.clip(located, 0, bins - 1)
    lo_cdf, hi_cdf = np.take_along_axis(cdf, located, axis=1), np.take_along_axis(cdf, located + 1, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(hi_cdf > lo_cdf, (fractions - lo_cdf) / (hi_cdf - lo_cdf), 0.5)
    return low + (located + np.clip(fraction, 0, 1)) * (high - low) / bins


def _companded(sorted_rows, k) -> np.ndarray:
    """k starting centroids at the companded quantiles (j + 1/2) / k."""
    return _companded_points(sorted_rows, (np.arange(k) + 0.5) / k)


def _starts(sorted_rows, keys, key_prefix, exact_prefix, distinct, k):
    """Starting centroids to try, and which rows the first one already solves exactly."""
    rows, n = sorted_rows.shape
    budget = dp_atom_budget(n, k)
    solved = distinct <= budget if budget else np.zeros(rows, bool)
    if budget:
        starts = [_dp_starts(keys, key_prefix, distinct, k, budget), _companded(sorted_rows, k)]
    else:  # Lloyd's local optima differ a lot between starts on short rows; keep the best of three
        starts = [_companded(sorted_rows, k), _chunk_means(sorted_rows, exact_prefix, k), _evenly_spaced(sorted_rows, k)]
    return starts, solved


def _search(sorted_rows, keys, key_prefix, exact_prefix, distinct, k) -> np.ndarray:
    """Centroids for rows with more than k distinct values (see the module docstring, steps 2-3)."""
    rows = sorted_rows.shape[0]
    starts, solved = _starts(sorted_rows, keys, key_prefix, exact_prefix, distinct, k)
    best = starts[0]
    open_rows = np.flatnonzero(~solved)
    if open_rows.size == 0:
        return best
    squares = np.einsum("ij,ij->i", sorted_rows[open_rows], sorted_rows[open_rows], dtype=np.float64)
    score = np.full(rows, -np.inf)
    for start in starts:
        candidate, counts = local.improve(sorted_rows, exact_prefix, open_rows, start[open_rows], squares)
        candidate_score = local.between_sum(counts, candidate)
        better = candidate_score > score[open_rows]
        best[open_rows[better]] = candidate[better]
        score[open_rows[better]] = candidate_score[better]
    return best


def nearest_indices(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of each row's sorted LUT (ties: lower index), uint8 (rows, n)."""
    values = _sortable(np.asarray(values))
    rows, k = lut.shape
    mids = local.round_down((lut[:, 1:] + lut[:, :-1]) / 2.0, values.dtype)
    if k <= 32:
        out = np.zeros(values.shape, dtype=np.uint8)
        for j in range(k - 1):
            out += values > mids[:, j : j + 1]
        return out
    if rows <= _SMALL_BATCH:
        return np.stack([np.searchsorted(mids[r], values[r], side="left") for r in range(rows)]).astype(np.uint8)
    flat = mids.reshape(-1)
    base = (np.arange(rows, dtype=np.int32) * (k - 1))[:, None]
    position = np.zeros(values.shape, dtype=np.int32)
    step = 1 << int(np.ceil(np.log2(k)) - 1)
    while step:
        candidate = position + step
        inside = candidate <= k - 1
        threshold = flat[base + np.minimum(candidate, k - 1) - 1]
        position = np.where(inside & (values > threshold), candidate, position)
        step >>= 1
    return position.astype(np.uint8)


def _exact_means(sorted_exact: np.ndarray, edges: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Mean of each run [edges[:, j], edges[:, j+1]) summed directly (no prefix-sum cancellation)."""
    rows, n = sorted_exact.shape
    starts = (np.arange(rows, dtype=np.int64)[:, None] * n + edges[:, :-1]).reshape(-1)
    counts = np.diff(edges, axis=1)
    sums = np.add.reduceat(sorted_exact.reshape(-1), np.minimum(starts, rows * n - 1), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums.reshape(counts.shape) / counts, fallback)


def _fit_exact(sorted_exact: np.ndarray, centroids: np.ndarray, to_storage) -> np.ndarray:
    """The stored LUT after one refinement step on the exact values.

    Each stored entry becomes the stored value nearest the mean of the exact
    values it wins. For a fixed assignment that minimises the error, and
    re-assigning to the nearest entry can only lower it further.
    """
    rows = centroids.shape[0]
    lut = np.sort(to_storage(centroids), axis=1)
    cuts = local.count_le(sorted_exact, np.arange(rows), (lut[:, 1:] + lut[:, :-1]) / 2)
    edges = np.concatenate([np.zeros((rows, 1), np.int64), cuts,
                            np.full((rows, 1), sorted_exact.shape[1], np.int64)], axis=1)
    return np.sort(to_storage(_exact_means(sorted_exact, edges, lut)), axis=1)


def _few_distinct(sorted_rows: np.ndarray, k: int) -> np.ndarray:
    """Centroids for rows with at most k distinct values: each value once, then the largest repeated."""
    rows, n = sorted_rows.shape
    new_run = np.ones((rows, n), dtype=bool)
    new_run[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    slots = (np.arange(rows)[:, None] * k + np.cumsum(new_run, axis=1) - 1).reshape(-1)
    out = np.full(rows * k, -np.inf)
    out[slots] = sorted_rows.reshape(-1)
    return np.maximum.accumulate(out.reshape(rows, k), axis=1)


def palettize_rows(
    values: np.ndarray,
    k: int,
    *,
    round_decimals: int | None = None,
    to_storage: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster each row into ``k`` scalar centroids: (lut (rows, k) float64 sorted, indices (rows, n) uint8).

    ``to_storage`` maps centroids to the values that will actually be stored; it
    must round each entry to the nearest storable value (e.g. to float16). The
    returned LUT holds the stored values, and each index points at the stored
    entry nearest to the exact value (ties: lower index). ``round_decimals``
    rounds the values that choose the starting point (fast mode); the search and
    the final fit use the exact values. Values must be finite.
    """
    values = np.asarray(values)
    if values.ndim != 2 or not 2 <= k <= 256:
        raise ValueError(f"values must be 2-D and k in [2, 256]; got shape {values.shape}, k={k}")
    to_storage = to_storage or (lambda c: np.asarray(c, dtype=np.float64))
    exact = _sortable(values)
    sorted_exact = np.sort(exact, axis=1)
    exact_prefix = local.prefix_sums(sorted_exact)
    if round_decimals is None:
        keys, key_prefix = sorted_exact, exact_prefix
    else:  # rounding is monotone, so the rounded sorted values stay sorted
        keys = np.round(sorted_exact.astype(np.float64), round_decimals).astype(exact.dtype)
        key_prefix = local.prefix_sums(keys)
    distinct = 1 + np.count_nonzero(keys[:, 1:] != keys[:, :-1], axis=1)
    exact_distinct = distinct if keys is sorted_exact else \
        1 + np.count_nonzero(sorted_exact[:, 1:] != sorted_exact[:, :-1], axis=1)
    centroids = np.empty((values.shape[0], k))
    few = exact_distinct <= k  # every distinct value gets its own entry: no error at all
    if few.any():
        centroids[few] = _few_distinct(sorted_exact[few], k)
    many = np.flatnonzero(~few)
    if many.size:
        pick = (lambda a: a) if many.size == values.shape[0] else (lambda a: a[many])
        centroids[many] = _search(pick(sorted_exact), pick(keys), pick(key_prefix), pick(exact_prefix),
                                  distinct[many], k)
    lut = _fit_exact(sorted_exact, centroids, to_storage)
    return lut, nearest_indices(exact, lut)
