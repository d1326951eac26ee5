"""Scalar palettization: 1-D k-means per row, optimal where affordable.

Each row of ``values`` is one group with its own LUT of ``k`` entries.

1. Sort each row (float32) and take prefix sums. In fast mode the values are
   also rounded to ``round_decimals`` decimals (in float64, so nothing
   overflows); rounding merges nearby values, so more rows fit the exact DP.
2. A row whose distinct (rounded) values fit the DP budget is solved exactly by
   the optimal DP (``_dp1d``). The budget depends only on the row length and
   ``k``, which keeps the DP's cost proportional to the data and a row's result
   independent of its batch.
3. Other rows start from the DP optimum over equal-count runs of the row or,
   for rows too short for a worthwhile DP, from the quantiles of the cube root of
   the row's histogram (the asymptotically optimal density of levels); then
   Lloyd iterations and merge/split moves (``_local1d``) improve them.
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
#: DP work allowed per value of a row: k * M^2 (dense) or 8 k M log2(M) (divide and conquer).
_DP_WORK_PER_VALUE = 8
_HISTOGRAM_BINS = 64
_SMALL_BATCH = 8


def dp_atom_budget(n_values: int, k: int) -> int:
    """How many atoms the DP may use for a row of ``n_values`` values (0: no DP)."""
    budget = 0
    size = 2 * k
    allowed = _DP_WORK_PER_VALUE * n_values
    while size <= _MAX_ATOMS:
        work = k * size * size if size <= DENSE_LIMIT else 8 * k * size * np.log2(size)
        if work > allowed:
            break
        budget = size
        size *= 2
    return budget


def _sortable(values: np.ndarray) -> np.ndarray:
    return values if values.dtype == np.float64 else values.astype(np.float32)


def _chunk_starts(n: int, parts: int) -> np.ndarray:
    return (np.arange(parts + 1, dtype=np.int64) * n) // parts


def _atoms(sorted_rows: np.ndarray, prefix: np.ndarray, distinct: np.ndarray, budget: int):
    """(counts, sums, squares, bounds) of at most ``budget`` atoms per row, normalised to about [-1, 1].

    A row with at most ``budget`` distinct values gets one atom per distinct value
    (padded with empty atoms at the end), a longer one ``budget`` equal-count runs.
    An atom stands for its values as a point mass at their mean: its own spread is
    the same whatever the partition, so the optimal partition is too.
    """
    rows, n = sorted_rows.shape
    bounds = np.broadcast_to(_chunk_starts(n, budget), (rows, budget + 1)).copy()
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


def _companded(sorted_rows, k) -> np.ndarray:
    """Quantiles of the cube root of each row's histogram: the high-resolution optimal level density."""
    rows = sorted_rows.shape[0]
    low, high = sorted_rows[:, :1].astype(np.float64), sorted_rows[:, -1:].astype(np.float64)
    edges = low + (high - low) * np.arange(_HISTOGRAM_BINS + 1) / _HISTOGRAM_BINS
    below = local.count_le(sorted_rows, np.arange(rows), edges[:, 1:-1])
    below = np.concatenate([np.zeros((rows, 1), np.int64), below, np.full((rows, 1), sorted_rows.shape[1])], axis=1)
    density = np.cbrt(np.diff(below, axis=1).astype(np.float64))
    cdf = np.concatenate([np.zeros((rows, 1)), np.cumsum(density, axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    targets = (np.arange(k) + 0.5) / k
    bins = np.clip((cdf[:, None, 1:] <= targets[None, :, None]).sum(axis=2), 0, _HISTOGRAM_BINS - 1)
    lo_cdf, hi_cdf = np.take_along_axis(cdf, bins, axis=1), np.take_along_axis(cdf, bins + 1, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(hi_cdf > lo_cdf, (targets - lo_cdf) / (hi_cdf - lo_cdf), 0.5)
    width = (high - low) / _HISTOGRAM_BINS
    return low + (bins + np.clip(fraction, 0, 1)) * width


def _search(sorted_rows, keys, key_prefix, exact_prefix, distinct, k) -> np.ndarray:
    """Centroids for rows with more than k distinct values (see the module docstring, steps 2-3)."""
    rows, n = sorted_rows.shape
    budget = dp_atom_budget(n, k)
    if budget:
        best = _dp_starts(keys, key_prefix, distinct, k, budget)
        solved = distinct <= budget
    else:
        best, solved = _companded(sorted_rows, k), np.zeros(rows, bool)
    open_rows = np.flatnonzero(~solved)
    if open_rows.size:
        squares = np.einsum("ij,ij->i", sorted_rows[open_rows], sorted_rows[open_rows], dtype=np.float64)
        best[open_rows], _ = local.improve(sorted_rows, exact_prefix, open_rows, best[open_rows], squares)
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


def _fit_exact(sorted_exact: np.ndarray, prefix: np.ndarray, centroids: np.ndarray, to_storage) -> np.ndarray:
    """The stored LUT after one refinement step on the exact values.

    Each stored entry becomes the stored value nearest the mean of the exact
    values it wins. For a fixed assignment that minimises the error, and
    re-assigning to the nearest entry can only lower it further.
    """
    rows = centroids.shape[0]
    lut = np.sort(to_storage(centroids), axis=1)
    every = np.arange(rows)
    cuts = local.count_le(sorted_exact, every, (lut[:, 1:] + lut[:, :-1]) / 2)
    edges = np.concatenate([np.zeros((rows, 1), np.int64), cuts,
                            np.full((rows, 1), sorted_exact.shape[1], np.int64)], axis=1)
    _, means = local.run_stats(prefix, every, edges, lut)
    return np.sort(to_storage(means), axis=1)


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
    centroids = np.empty((values.shape[0], k))
    few = distinct <= k
    if few.any():
        centroids[few] = _few_distinct(keys[few], k)
    many = np.flatnonzero(~few)
    if many.size:
        pick = (lambda a: a) if many.size == values.shape[0] else (lambda a: a[many])
        centroids[many] = _search(pick(sorted_exact), pick(keys), pick(key_prefix), pick(exact_prefix),
                                  distinct[many], k)
    lut = _fit_exact(sorted_exact, exact_prefix, centroids, to_storage)
    return lut, nearest_indices(exact, lut)
