"""Scalar palettization: 1-D k-means per row, optimal where affordable.

Each row of ``values`` is one group with its own LUT of ``k`` entries.

1. Sort (or, for long 16-bit rows, count) each row's values into a histogram
   with prefix sums. In fast mode the values are also rounded to
   ``round_decimals`` decimals (in float64, so nothing overflows); rounding
   merges nearby values, so more rows fit the exact DP.
2. A row whose distinct values fit the DP budget is solved exactly by the
   optimal DP (``_dp1d``); in fast mode, a row whose rounded values fit starts
   from the DP optimum of the rounded values. The budget depends only on the
   row length and ``k``, which keeps the DP's cost proportional to the data and
   a row's result independent of its batch.
3. Other rows start from the DP optimum over atoms of the exact values
   (equal-width bins, so outliers get atoms of their own, merged with
   equal-count bins, so the bulk gets narrow ones: the DP lands next to the
   true optimum; at most 128 atoms per cluster, and on the dense DP a cluster
   spans at most 4 times its average share of them). Where that is more atoms than
   the dense DP takes (long rows, k <= 32), the DP runs over 128 atoms and an
   exact DP over positions around each of its cuts moves them to where a
   finer DP would put them (``_refined_starts``). Every row gets at least
   ``4 k`` atoms while that fits the dense DP (k <= 32): on short rows
   Lloyd iterations cost more than the DP and stop farther from the optimum.
   A DP over that many atoms is the only start, improved by Lloyd iterations
   (merge/split moves almost never pay there: on 14 of 48,966 MiniLM
   per-channel rows at k = 16, for 5e-6 of the SSE). Rows with fewer atoms
   also try centroids at the quantiles of the cube root of the row's
   histogram (the asymptotically optimal density of levels); rows with no DP
   (k = 64 on rows of fewer than 2,048 values, k >= 128 on rows shorter than
   whole tensors) try those and evenly spaced centroids. Each of
   several starts gets Lloyd iterations and merge/split moves (``_local1d``),
   and the best result per row is kept.
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
#: costs k * M^2 units). Rows of at least ``_LONG_ROW`` values are few (whole tensors); their
#: local optima differ most and the DP's fixed cost is small next to their other work, so they
#: get more, and only they may use the divide-and-conquer DP above ``_SMALL_BUDGET`` atoms
#: (priced per layer and per candidate it examines).
_DP_WORK_PER_VALUE = 8
_DP_WORK_PER_VALUE_LONG = 32
_LONG_ROW = 1 << 17
_DIVIDE_AND_CONQUER_COST = 16
_DIVIDE_AND_CONQUER_LAYER = 1 << 16  # the fixed cost of each of its k layers (its many small numpy calls)
_HISTOGRAM_BINS = 64
#: Atom budgets up to this are priced as a dense O(k M^2) DP; only long rows may exceed it.
_SMALL_BUDGET = 256
_SMALL_BATCH = 8
#: Every row gets at least this many atoms per cluster where that fits the dense DP: on short rows
#: Lloyd iterations cost more per value than a small dense DP, and start farther from the optimum.
_MIN_ATOMS_PER_CLUSTER = 4
#: ... up to the dense DP's limit (k <= 32); beyond, a row gets only the atoms its length pays for.
#: At k = 32 this DP over 128 atoms left 1-5 % less error on MiniLM rows of 192 to 12,288 values
#: than the two starts without it, in 10-65 % less time from 768 values up and 20-40 % more below.
_MIN_ATOMS_LIMIT = DENSE_LIMIT
#: A DP start over at least this many atoms (and 4 per cluster) is the only start (``_starts``).
_LONE_START_ATOMS = 64
#: Where 4 atoms per cluster exceed the dense DP (k = 64), rows of at least this many values still
#: get 2 per cluster: at k = 64 that took 10-50 % less time than no DP on MiniLM rows of 2,304 and
#: 12,288 values and 65,536-value float16 groups, with less error (the same at 1,536 values, and
#: slower below).
_TWO_ATOMS_ROW = 2048


def dp_atom_budget(n_values: int, k: int) -> int:
    """How many atoms the DP may use for a row of ``n_values`` values (0: no DP).

    The DP's work is priced per value of the row, and every row gets at least
    ``_MIN_ATOMS_PER_CLUSTER * k`` atoms, up to ``_MIN_ATOMS_LIMIT`` (rows of at
    least ``_TWO_ATOMS_ROW`` values: 2 per cluster, where that fits the dense DP).
    """
    long_row = n_values >= _LONG_ROW
    allowed = (_DP_WORK_PER_VALUE_LONG if long_row else _DP_WORK_PER_VALUE) * n_values
    budget = 0
    size = 2 * k
    while size <= _MAX_ATOMS:
        if size > _SMALL_BUDGET and not long_row:
            break
        work = k * (size * size if size <= _SMALL_BUDGET
                    else _DIVIDE_AND_CONQUER_LAYER + _DIVIDE_AND_CONQUER_COST * size * (size.bit_length() - 1))
        if work > allowed:
            break
        budget = size
        size *= 2
    floor = _MIN_ATOMS_PER_CLUSTER * k
    if floor <= _MIN_ATOMS_LIMIT:
        return max(budget, floor)
    if not budget and 2 * k <= DENSE_LIMIT and n_values >= _TWO_ATOMS_ROW:
        return 2 * k
    return budget


#: A DP start over atoms (a row with more distinct values than its budget) uses at most this many
#: atoms per cluster: beyond, the start barely moved (at most 2e-5 relative error on MiniLM's
#: whole-tensor rows at k <= 16, when they took this DP) while the divide-and-conquer DP's cost keeps
#: growing (a budget this cap halves ran 1.4-2x longer). Rows that fit the budget are still solved
#: exactly. Where the capped count exceeds the dense DP's limit at k <= 32, ``_refined_starts``
#: replaces this DP, so the cap now bounds the DP of k >= 64 only.
_ATOMS_PER_CLUSTER_LIMIT = 128


def _approximating_atoms(budget: int, k: int) -> int:
    """Atoms of a DP start for rows with more distinct values than ``budget``."""
    return min(budget, max(_ATOMS_PER_CLUSTER_LIMIT * k, _SMALL_BUDGET))


def _sortable_type(dtype: np.dtype) -> np.dtype:
    """The type values of ``dtype`` are sorted and compared in: float64 stays, others are float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _sortable(values: np.ndarray) -> np.ndarray:
    """The values in their ``_sortable_type`` (the array itself where they already are: read only)."""
    return values.astype(_sortable_type(values.dtype), copy=False)


_BIN_TRIALS = 8


def _uniform_bounds(hist: local.Histogram, rows: np.ndarray, budget: int, n_values: int) -> np.ndarray:
    """Start of each atom (in distinct-value positions) when a row is cut into equal-width bins.

    Empty bins are dropped and the finest width whose non-empty bins number at
    most ``budget`` is used (``_BIN_TRIALS`` trials, each halving the bin count;
    the last has ``budget`` bins, which always fit). A value on a bin edge
    belongs to the upper bin. Padded with the row's size.

    Long rows (few, whole tensors) look their bin edges up in the sorted values;
    batches of shorter rows bin their values (``_binned_starts``; float32 rows in
    float32, where a value within rounding of an edge may fall on either side).
    The choice depends on the row length only, so a row's atoms never depend on
    its batch.
    """
    finest = budget << (_BIN_TRIALS - 1)
    if n_values < _LONG_ROW:
        return _binned_starts(hist, rows, budget)
    sizes = hist.sizes[rows].astype(np.int64)
    bounds = np.broadcast_to(sizes[:, None], (rows.size, budget + 1)).copy()
    bounds[:, 0] = 0
    # Finer trials never have fewer non-empty bins, so go coarse to fine and stop each row at the
    # first trial that no longer fits: only the edges of the trials tried are looked up.
    trying = np.arange(rows.size)
    for dropped in range(_BIN_TRIALS - 1, -1, -1):
        stride = 1 << dropped
        low, high = hist.low(rows[trying])[:, None], hist.high(rows[trying])[:, None]
        edges = low + (high - low) * (np.arange(1, finest)[stride - 1 :: stride] / finest)
        starts = local.search_sorted(hist.values, rows[trying], np.nextafter(edges, -np.inf))  # values below
        new = starts > np.concatenate([np.zeros((trying.size, 1), np.int64), starts[:, :-1]], axis=1)
        new &= starts < sizes[trying, None]
        fits = new.sum(axis=1) < budget  # atoms besides the first
        trying, starts, new = trying[fits], starts[fits], new[fits]
        if trying.size == 0:
            break
        bounds[trying] = sizes[trying, None]
        bounds[trying, 0] = 0
        row_of, column = np.nonzero(new)
        _set_atom_starts(bounds, trying[row_of], starts[row_of, column])
    return bounds


def _binned_starts(hist: local.Histogram, rows: np.ndarray, budget: int) -> np.ndarray:
    """``_uniform_bounds`` by binning the values, coarse to fine: a row stops at the first width that
    no longer fits, so most rows bin their values once (all but 0.2 % of MiniLM's rows at k = 16)."""
    bounds = np.broadcast_to(hist.sizes[rows][:, None], (rows.size, budget + 1)).astype(np.int64)
    bounds[:, 0] = 0
    low, high = hist.low(rows), hist.high(rows)
    trying = np.arange(rows.size)
    for dropped in range(_BIN_TRIALS - 2, -1, -1):
        row_of, column, differ = _bin_changes(hist.values, rows[trying], low[trying], high[trying],
                                              budget << (_BIN_TRIALS - 1 - dropped))
        fits = np.bincount(row_of, minlength=trying.size) < budget  # atoms besides the first
        # Indices are sorted, so neighbours share a bin twice as wide unless they differ above the lowest bit.
        keep = ~fits[row_of] & (differ > 1)  # rows that stop take the wider bins
        if dropped == 0:
            keep |= fits[row_of]
        _set_atom_starts(bounds, trying[row_of[keep]], column[keep] + 1)
        trying = trying[fits]
        if trying.size == 0:
            break
    return bounds


#: Values ``_bin_changes`` bins at a time: its temporaries (14 bytes per value) stay in the CPU caches
#: and small (binning 4 M values at once took 37 MB, whose first touch in a fresh worker process
#: costs more than the binning on this project's machine).
_BIN_BLOCK = 1 << 17


def _bin_changes(values: np.ndarray, rows: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int):
    """Where the equal-width bin of the listed sorted rows changes: (index into ``rows``, position
    before the change, bin index after XOR before), row by row and position by position."""
    n = values.shape[1]
    per_block = max(1, _BIN_BLOCK // n)
    parts = []
    for first in range(0, rows.size if n > 1 else 0, per_block):
        last = min(rows.size, first + per_block)
        index = _bin_indices(values[rows[first:last]], low[first:last], high[first:last], bins)
        differ = index[:, 1:] ^ index[:, :-1]
        changes = np.flatnonzero(differ != 0)  # numpy finds non-zeros of bools 3-6x faster than of integers
        row_of, column = np.divmod(changes, n - 1)
        parts.append((first + row_of, column, differ.reshape(-1)[changes]))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int16)
    return tuple(np.concatenate(part) for part in zip(*parts, strict=True))


#: Rows whose span or bin scale exceeds this are binned in float64 (float32 could overflow).
_FLOAT32_SAFE = 2.0**100


def _bin_indices(values: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each value of sorted rows, ``floor((v - low) / (high - low) * bins)`` clipped to
    the last bin (padding too). Float32 rows are binned in float32 where that cannot overflow (half the
    memory traffic): a value within rounding of an edge may then fall on either side of it."""
    span = high - low
    with np.errstate(over="ignore"):
        scale = np.divide(bins, span, out=np.zeros_like(span), where=span > 0)  # one value: all in bin 0
    wide = (span > _FLOAT32_SAFE) | (scale > _FLOAT32_SAFE) | (values.dtype != np.float32)
    out = np.empty(values.shape, np.int16 if bins <= 1 << 15 else np.int32)
    for chosen, precision in ((~wide, np.float32), (wide, np.float64)):
        if not chosen.any():
            continue
        part = values if chosen.all() else values[chosen]
        with np.errstate(over="ignore", invalid="ignore"):  # inf (padding, overflow) or inf * 0: last bin
            scaled = np.subtract(part, low[chosen, None].astype(precision), dtype=precision)
            scaled *= scale[chosen, None].astype(precision)
        np.fmin(scaled, bins - 1, out=scaled)
        if chosen.all():
            return scaled.astype(out.dtype)
        out[chosen] = scaled
    return out


def _set_atom_starts(bounds: np.ndarray, row_of: np.ndarray, positions: np.ndarray) -> None:
    """Write each row's atom starts after its first (``row_of`` non-decreasing, positions increasing)."""
    counts = np.bincount(row_of, minlength=bounds.shape[0])
    bounds[row_of, 1 + np.arange(row_of.size) - (np.cumsum(counts) - counts)[row_of]] = positions


def _equal_count_bounds(hist: local.Histogram, rows: np.ndarray, atoms: int) -> np.ndarray:
    """Start of each of ``atoms`` atoms (in distinct-value positions) holding about equal numbers of values."""
    totals = hist.counts[rows, -1] if not hist.unit else hist.sizes[rows]
    targets = (totals[:, None] * np.arange(atoms)) // atoms
    if hist.unit:
        return targets.astype(np.int64)
    return local.search_sorted(hist.counts, rows, targets - 1)  # first position with that many values before it


def _atom_bounds(hist: local.Histogram, rows: np.ndarray, budget: int, n_values: int) -> np.ndarray:
    """Start of each atom (in distinct-value positions): equal-width bins and equal-count bins, merged.

    Equal widths give each outlier an atom of its own; equal counts keep atoms
    narrow in the bulk, where a heavy-tailed row's equal-width bins are few.
    Together they let the DP over atoms land next to the true optimum. At most
    ``budget`` atoms; padded with the row's size.
    """
    half = budget // 2
    both = [_uniform_bounds(hist, rows, half, n_values), _equal_count_bounds(hist, rows, half)]
    merged = np.sort(np.concatenate(both, axis=1), axis=1)
    repeated = np.zeros(merged.shape, dtype=bool)
    repeated[:, 1:] = merged[:, 1:] == merged[:, :-1]
    merged[repeated] = np.broadcast_to(hist.sizes[rows][:, None], merged.shape)[repeated]
    return np.sort(merged, axis=1)


def _atoms(hist: local.Histogram, rows: np.ndarray, budget: int, n_values: int):
    """(counts, sums, squares, bounds) of at most ``budget`` atoms per row, normalised to about [-1, 1].

    A row with at most ``budget`` distinct values gets one atom per value, a
    longer one equal-width and equal-count bins (``_atom_bounds``); empty atoms pad the end.
    An atom stands for its values as a point mass at their mean: its own spread is
    the same whatever the partition, so the optimal partition is too.
    """
    bounds = _atom_bounds(hist, rows, budget, n_values)
    exact = np.flatnonzero(hist.sizes[rows] <= budget)
    positions = np.arange(budget + 1)[None, :]
    bounds[exact] = np.minimum(positions, hist.sizes[rows[exact]][:, None])
    counts, means = local.run_stats(hist, rows, bounds, 0.0)
    counts = counts.astype(np.float64)
    low, high = hist.low(rows)[:, None], hist.high(rows)[:, None]
    center, scale = (low + high) / 2, np.maximum((high - low) / 2, np.finfo(np.float64).tiny)
    sums = counts * (means - center) / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        squares = np.where(counts > 0, sums * sums / counts, 0.0)
    return counts, sums, squares, bounds


def _partition_start(hist: local.Histogram, rows: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, ``bounds``) of the partition of each listed row at ``bounds`` (positions, (rows, k + 1)):
    each run's mean; an empty run takes its left neighbour's (the row's lowest value at the start)."""
    _, means = local.run_stats(hist, rows, bounds, np.nan)
    filled = np.fmax.accumulate(np.where(np.isnan(means), -np.inf, means), axis=1)
    return np.where(np.isinf(filled), hist.low(rows)[:, None], filled), bounds


def _dp_starts(hist: local.Histogram, rows: np.ndarray, k: int, budget: int, n_values: int,
               longest_run: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centroids of the optimal partition of each row's atoms (clusters of at most ``longest_run``
    atoms), and its cluster edges (positions, (rows, k + 1))."""
    counts, sums, squares, atom_bounds = _atoms(hist, rows, budget, n_values)
    starts = np.take_along_axis(atom_bounds, optimal_partition(counts, sums, squares, k, longest_run), axis=1)
    return _partition_start(hist, rows, np.concatenate([starts, hist.sizes[rows][:, None].astype(np.int64)], axis=1))


#: A row with more distinct values than its atom budget, whose approximating DP would take more atoms
#: than the dense DP (k <= 32 on whole tensors and on rows of at least 8,192 k values), starts from the
#: dense DP over ``DENSE_LIMIT`` atoms, its cuts then moved by an exact DP over ``_REFINE_POINTS`` + 1
#: positions around each, up to ``_REFINE_REACH`` atoms away (``_refined_starts``). On MiniLM's 39
#: whole tensors, against the divide-and-conquer DP over 512-2,048 atoms it replaced, after Lloyd:
#: less error on 29 to 37 of them at k = 4, 8, 16 and 32 (on average 5e-6 to 1e-5 less, 2e-4 at
#: k = 32; at most 3e-5 more on any at k <= 16) in 15-30 % less clustering time. Reach 2 or 4
#: atoms, or positions 1/8 of an atom apart, left more error.
_REFINE_REACH = 3
_REFINE_POINTS = 96
#: Rows whose windows one DP step holds at a time (bounds its (rows, P + 1, P + 1) temporaries to 2.4 MB).
_REFINE_ROWS = 32


def _refines(atoms: int, k: int) -> bool:
    """Whether a DP start over ``atoms`` approximating atoms is replaced by ``_refined_starts``."""
    return atoms > DENSE_LIMIT and _MIN_ATOMS_PER_CLUSTER * k <= DENSE_LIMIT


def _window_positions(bounds: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(rows, k - 1, ``_REFINE_POINTS`` + 1) sorted candidate positions for each cut (atom indices
    ``cuts`` into ``bounds``): the cut itself in the middle, evenly spaced ones below it down to
    ``_REFINE_REACH`` atoms lower and above it up to as many atoms higher."""
    last = bounds.shape[1] - 1
    cut = np.take_along_axis(bounds, cuts, axis=1)[..., None]
    low = np.take_along_axis(bounds, np.maximum(cuts - _REFINE_REACH, 0), axis=1)[..., None]
    high = np.take_along_axis(bounds, np.minimum(cuts + _REFINE_REACH, last), axis=1)[..., None]
    half = _REFINE_POINTS // 2
    below = low + np.floor((cut - low) * (np.arange(half) / half)).astype(np.int64)
    above = cut + np.ceil((high - cut) * (np.arange(1, half + 1) / half)).astype(np.int64)
    return np.concatenate([below, cut, above], axis=2)


def _run_gain(count: np.ndarray, total: np.ndarray) -> np.ndarray:
    """What a run of ``count`` values summing to ``total`` takes off the SSE by its mean: total^2 / count
    (0 when empty, -inf for a negative count: a run that would end before it starts)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total * total / count, np.where(count == 0, 0.0, -np.inf))


def _best_cuts(before: np.ndarray, summed: np.ndarray, count: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Index of the chosen candidate of each cut, (rows, k - 1), maximising the sum of ``_run_gain``
    over the runs: ``before`` and ``summed`` (rows, k - 1, candidates) are the running counts and
    sums at the candidates, ``count`` and ``total`` (rows, 1) those of the whole row. Ties: the first."""
    rows, cuts, _ = before.shape
    best = _run_gain(before[:, 0], summed[:, 0])  # the first run ends at each candidate
    choices = []
    for cut in range(1, cuts):
        gains = best[:, :, None] + _run_gain(before[:, cut, None, :] - before[:, cut - 1, :, None],
                                             summed[:, cut, None, :] - summed[:, cut - 1, :, None])
        choice = gains.argmax(axis=1)  # the best candidate for the previous cut, per candidate for this one
        best = np.take_along_axis(gains, choice[:, None, :], axis=1)[:, 0]
        choices.append(choice)
    best += _run_gain(count - before[:, -1], total - summed[:, -1])
    picked = np.empty((rows, cuts), np.int64)
    picked[:, -1] = best.argmax(axis=1)
    for cut in range(cuts - 1, 0, -1):
        picked[:, cut - 1] = np.take_along_axis(choices[cut - 1], picked[:, cut, None], axis=1)[:, 0]
    return picked


def _refined_starts(hist: local.Histogram, rows: np.ndarray, k: int, n_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (and cluster edges) of the best partition whose cuts lie among the ``_window_positions``
    around the cuts of the optimal partition of ``DENSE_LIMIT`` atoms, which is among them: never worse than it.

    The least SSE is the greatest sum over runs of sum^2 / count, so an exact DP over the
    candidates needs the running counts and sums at them only; sums are taken about the row's
    midrange, which changes each partition's total by the same amount, to keep them small.
    """
    counts, sums, squares, bounds = _atoms(hist, rows, DENSE_LIMIT, n_values)
    positions = _window_positions(bounds, optimal_partition(counts, sums, squares, k)[:, 1:])
    sizes = hist.sizes[rows].astype(np.int64)
    ends = np.concatenate([positions.reshape(rows.size, -1), sizes[:, None]], axis=1)
    before = local.running_counts(hist, rows, ends).astype(np.float64)
    midrange = (hist.low(rows) + hist.high(rows))[:, None] / 2
    summed = local.running_sums(hist, rows, ends) - before * midrange
    count, total = before[:, -1:], summed[:, -1:]  # the whole row
    before, summed = before[:, :-1].reshape(positions.shape), summed[:, :-1].reshape(positions.shape)
    picked = np.concatenate([_best_cuts(before[r : r + _REFINE_ROWS], summed[r : r + _REFINE_ROWS],
                                        count[r : r + _REFINE_ROWS], total[r : r + _REFINE_ROWS])
                             for r in range(0, rows.size, _REFINE_ROWS)])
    cuts = np.take_along_axis(positions, picked[..., None], axis=2)[..., 0]
    return _partition_start(hist, rows, np.concatenate([np.zeros((rows.size, 1), np.int64), cuts, sizes[:, None]],
                                                       axis=1))


def _evenly_spaced(hist: local.Histogram, rows: np.ndarray, k: int) -> np.ndarray:
    """k centroids evenly spread between each row's extremes."""
    low, high = hist.low(rows)[:, None], hist.high(rows)[:, None]
    return low + (high - low) * (np.arange(k) + 0.5) / k


#: Initial cube-root estimate: the exponent field divided by 3 (a few % off), as in the classic bit trick.
_CUBE_ROOT_MAGIC = 0x2A9F7893782DA1CE
_CUBE_ROOT_STEPS = 5  # Newton steps from it: the error squares each step, down to float64 rounding


def _cube_root(x: np.ndarray) -> np.ndarray:
    """Cube root of zeros and normal positive float64 values, by integer and IEEE arithmetic only: the same bits
    whatever numpy's SIMD target (``np.cbrt`` differs in the last bit between its AVX-512 and AVX2
    code, and sorting calls may run in processes that skip AVX-512, see ``_pool``)."""
    y = (x.view(np.int64) // 3 + _CUBE_ROOT_MAGIC).view(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(_CUBE_ROOT_STEPS):
            y = (y + y + x / (y * y)) / 3.0
    return np.where(x > 0, y, 0.0)


def _companded_points(hist: local.Histogram, rows: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Values at the given quantiles of the cube root of each row's histogram, (rows, len(fractions)).

    Level density proportional to the cube root of the value density is what
    minimises the squared error of a fine quantizer, so these points spread
    over the tails instead of crowding into the bulk the way plain quantiles do.
    """
    bins = max(_HISTOGRAM_BINS, 2 * fractions.size)
    low, high = hist.low(rows)[:, None], hist.high(rows)[:, None]
    edges = low + (high - low) * np.arange(1, bins) / bins
    positions = local.search_sorted(hist.values, rows, edges)
    ends = np.concatenate([positions, hist.sizes[rows][:, None].astype(np.int64)], axis=1)
    below = np.concatenate([np.zeros((rows.size, 1), np.int64), local.running_counts(hist, rows, ends)], axis=1)
    cdf = np.concatenate([np.zeros((rows.size, 1)), np.cumsum(_cube_root(np.diff(below, axis=1).astype(np.float64)),
                                                               axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    located = np.stack([np.searchsorted(cdf[r, 1:], fractions, side="right") for r in range(rows.size)]) \
        if rows.size <= _SMALL_BATCH else (cdf[:, None, 1:] <= fractions[None, :, None]).sum(axis=2)
    located = np.clip(located, 0, bins - 1)
    lo_cdf, hi_cdf = np.take_along_axis(cdf, located, axis=1), np.take_along_axis(cdf, located + 1, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(hi_cdf > lo_cdf, (fractions - lo_cdf) / (hi_cdf - lo_cdf), 0.5)
    return low + (located + np.clip(fraction, 0, 1)) * (high - low) / bins


def _companded(hist: local.Histogram, rows: np.ndarray, k: int) -> np.ndarray:
    """k starting centroids at the companded quantiles (j + 1/2) / k."""
    return _companded_points(hist, rows, (np.arange(k) + 0.5) / k)


def _dp_starts_for(hist: local.Histogram, keys: local.Histogram, rows: np.ndarray, n: int, k: int, budget: int):
    """DP starts: over the rounded values (``keys``) of rows that fit the budget only once rounded, else over
    atoms of the exact values (rounding would only blur atoms the binning makes anyway). With their cluster
    edges among the exact values (zeros for the rounded rows: unknown there)."""
    exact = hist.sizes[rows] <= budget
    on_keys = np.zeros(rows.size, bool)
    if keys is not hist:
        on_keys = ~exact & (keys.sizes[rows] <= budget)
    starts = np.empty((rows.size, k))
    edges = np.zeros((rows.size, k + 1), np.int64)
    if on_keys.any():
        starts[on_keys] = _dp_starts(keys, rows[on_keys], k, budget, n)[0]
    if exact.any():
        starts[exact], edges[exact] = _dp_starts(hist, rows[exact], k, budget, n)
    approximated = ~exact & ~on_keys
    if approximated.any():
        starts[approximated], edges[approximated] = _approximate_starts(hist, rows[approximated], k, budget, n)
    return starts, edges


#: An approximating DP over the dense table lets one cluster span at most this many times the average
#: atoms per cluster: on MiniLM's groups of 2,304, 12,288 and 49,152 values at 4 bits (64 atoms, runs
#: of at most 16 instead of 49) the same error after Lloyd to 7 digits, the DP in a third of the time.
#: Its start gets Lloyd iterations anyway; rows solved exactly by the DP keep every run length.
_RUN_ATOMS_PER_CLUSTER = 4


def _approximate_starts(hist: local.Histogram, rows: np.ndarray, k: int, budget: int, n: int):
    """DP starts (and their cluster edges) of rows with more distinct values than ``budget``: over atoms
    of their values."""
    atoms = _approximating_atoms(budget, k)
    if _refines(atoms, k):
        return _refined_starts(hist, rows, k, n)
    longest_run = -(-_RUN_ATOMS_PER_CLUSTER * atoms // k) if atoms <= DENSE_LIMIT else None
    return _dp_starts(hist, rows, k, atoms, n, longest_run)


def _lone_dp_start(budget: int, k: int) -> bool:
    """Whether a DP start over ``budget`` atoms is a row's only start (no other starts, no moves)."""
    return budget >= max(_MIN_ATOMS_PER_CLUSTER * k, _LONE_START_ATOMS)


def _starts(hist: local.Histogram, keys: local.Histogram, rows: np.ndarray, n: int, k: int):
    """Starting centroids to try, which rows the first one already solves exactly, and the cluster
    edges of the first (a DP's: Lloyd's first searches start near them) or None.

    ``keys`` are the rounded values in fast mode (else ``hist``).
    """
    budget = dp_atom_budget(n, k)
    if budget:
        solved = hist.sizes[rows] <= budget
        dp, edges = _dp_starts_for(hist, keys, rows, n, k, budget)
        starts = [dp]
        # A DP over at least 4 k (and 64) atoms is the only start: Lloyd run to a tight tolerance from
        # it beat the better of it and a companded start run to a looser one on whole tensors and
        # 65,536-value groups (lower error, 15-28 % less time) and cost at most 0.12 % more error on
        # MiniLM's shorter groups (2,304-12,288 values) for 20-40 % less time.
        if not _lone_dp_start(budget, k):
            starts.append(_companded(hist, rows, k))
        return starts, solved, edges
    # Lloyd's local optima differ a lot between starts on short rows; keep the better of two.
    starts = [_companded(hist, rows, k), _evenly_spaced(hist, rows, k)]
    return starts, np.zeros(rows.size, bool), None


def _search(hist: local.Histogram, keys: local.Histogram, rows: np.ndarray, n: int, k: int):
    """Centroids for the listed rows, which have more than k distinct values (module docstring, 2-3),
    and where their clusters meet (k - 1 positions; 0 for rows the DP solved: unknown)."""
    starts, solved, first_edges = _starts(hist, keys, rows, n, k)
    best = starts[0]
    cuts = np.zeros((rows.size, k - 1), np.int64)
    open_rows = np.flatnonzero(~solved)
    if open_rows.size == 0:
        return best, cuts
    moves = len(starts) > 1  # a lone DP start gets Lloyd iterations only
    squares = hist.squares(rows[open_rows]) if moves else None
    score = np.full(rows.size, -np.inf)
    for number, start in enumerate(starts):
        near = first_edges[open_rows] if number == 0 and first_edges is not None else None
        candidate, counts, edges = local.improve(hist, rows[open_rows], start[open_rows], squares, near)
        candidate_score = local.between_sum(counts, candidate)
        better = candidate_score > score[open_rows]
        best[open_rows[better]] = candidate[better]
        cuts[open_rows[better]] = edges[better, 1:-1]
        score[open_rows[better]] = candidate_score[better]
    return best, cuts


#: Cells of the grid ``_count_below`` looks values up in: fine enough that few cells hold a midpoint.
_GRID_CELLS = 1 << 14
#: Rows at least this long find their nearest entries row by row (``_count_below``, 6-8x faster
#: there than the vectorised binary search over all rows, which wins on many short rows).
_LONG_NEAREST = 1 << 14
#: Long rows are assigned this many values at a time: the temporaries stay in cache and small (whole-row
#: ones took 250 MB for the MiniLM embedding at k = 256, whose first touch in a fresh worker process costs
#: more than the work on this project's machine), with a few numpy calls per chunk.
_NEAREST_CHUNK = 1 << 16


def _count_below(values: np.ndarray, mids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.searchsorted(mids, values, side="left")`` for one long row, about twice as fast, into ``out``
    (any integer type that holds ``mids.size``; a new intp array if None), a chunk at a time. ``mids``
    are of ``values``' ``_sortable_type``.

    Each value's cell in an even grid over the midpoints gives a lower bound on
    its answer (the count below the previous cell's edge: the cell computed in
    float32 is off by far less than one); exact comparisons then step it up,
    on ever fewer values.
    """
    out = np.empty(values.shape, np.intp) if out is None else out
    low, high = float(mids[0]), float(mids[-1])
    scale = _GRID_CELLS / (high - low) if high > low else np.inf
    if not scale < float(np.finfo(np.float32).max):
        for a in range(0, values.size, _NEAREST_CHUNK):
            out[a : a + _NEAREST_CHUNK] = np.searchsorted(mids, _sortable(values[a : a + _NEAREST_CHUNK]), side="left")
        return out
    edges = low + np.arange(-1, _GRID_CELLS) / scale  # each cell's previous edge
    below = np.searchsorted(mids, edges, side="left")
    padded = np.append(mids, np.array(np.inf, mids.dtype))
    low_v, scale32 = mids.dtype.type(low), np.float32(scale)
    for a in range(0, values.size, _NEAREST_CHUNK):
        chunk = _sortable(values[a : a + _NEAREST_CHUNK])
        with np.errstate(over="ignore"):  # values far outside the midpoints: +-inf, clipped to the end cells
            cell = (chunk - low_v).astype(np.float32, copy=False) * scale32
        np.clip(cell, 0, _GRID_CELLS, out=cell)
        count = below[cell.astype(np.int32)]
        step = np.flatnonzero(chunk > padded[count])
        while step.size:
            count[step] += 1
            step = step[chunk[step] > padded[count[step]]]
        out[a : a + _NEAREST_CHUNK] = count
    return out


#: Values ``_count_above_few`` compares at a time (a block of rows, or of a long row): the block,
#: its comparisons and its counts stay in the CPU caches (2,304-value rows at k = 16: 23 -> 15 ms
#: per 4 M values against all rows at once).
_FEW_BLOCK = 1 << 17


def _count_above_few(values: np.ndarray, mids: np.ndarray, out: np.ndarray) -> None:
    """``out[r, i]`` = how many of ``mids[r]`` lie below ``values[r, i]``, by one comparison per midpoint
    (few midpoints), a cache-sized block of values at a time."""
    rows, n = values.shape
    step = max(1, min(n, _NEAREST_CHUNK))  # whole rows up to a chunk's length
    per_block = max(1, _FEW_BLOCK // step)
    above = np.empty((min(per_block, rows), step), dtype=bool)
    for r in range(0, rows, per_block):
        for a in range(0, n, step):
            part, target = _sortable(values[r : r + per_block, a : a + step]), out[r : r + per_block, a : a + step]
            compared = above[: part.shape[0], : part.shape[1]]
            for j in range(mids.shape[1]):
                np.greater(part, mids[r : r + per_block, j : j + 1], out=compared)
                target += compared.view(np.uint8)


def nearest_indices(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of each row's sorted LUT (ties: lower index), uint8 (rows, n)."""
    values = np.asarray(values)
    rows, k = lut.shape
    mids = local.round_down((lut[:, 1:] + lut[:, :-1]) / 2.0, _sortable_type(values.dtype))
    out = np.zeros(values.shape, dtype=np.uint8)
    if k <= 32:
        _count_above_few(values, mids, out)
        return out
    if rows <= _SMALL_BATCH or values.shape[1] >= _LONG_NEAREST:
        for r in range(rows):
            _count_below(values[r], mids[r], out[r])
        return out
    values = _sortable(values)
    flat = mids.reshape(-1)
    base = (np.arange(rows, dtype=np.int32) * (k - 1))[:, None]
    position = np.zeros(values.shape, dtype=np.int32)
    step = 1 << ((k - 1).bit_length() - 1)  # half the power of two at or above k
    while step:
        candidate = position + step
        inside = candidate <= k - 1
        threshold = flat[base + np.minimum(candidate, k - 1) - 1]
        position = np.where(inside & (values > threshold), candidate, position)
        step >>= 1
    return position.astype(np.uint8)


def _exact_means(hist: local.Histogram, edges: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Mean of each run [edges[:, j], edges[:, j+1]) of entries, summed directly (no prefix-sum cancellation)."""
    rows, width = hist.values.shape
    if hist.unit:  # one finite entry per value: sum the values themselves, in float64
        weighted = hist.values
    else:
        weighted = local.entry_counts(hist) * np.where(np.isfinite(hist.values), hist.values.astype(np.float64), 0.0)
    starts = (np.arange(rows, dtype=np.int64)[:, None] * width + edges[:, :-1]).reshape(-1)
    sums = local.run_sums(weighted.reshape(-1), starts).reshape(rows, -1)
    counts = np.diff(local.running_counts(hist, np.arange(rows), edges), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / counts, fallback)


def _fit_exact(hist: local.Histogram, centroids: np.ndarray, to_storage, cuts: np.ndarray) -> np.ndarray:
    """The stored LUT after one refinement step on the exact values.

    Each stored entry becomes the stored value nearest the mean of the exact
    values it wins. For a fixed assignment that minimises the error, and
    re-assigning to the nearest entry can only lower it further. ``cuts`` are
    where the centroids' clusters meet, where known: the stored entries' are searched near them.
    """
    rows = centroids.shape[0]
    lut = np.sort(to_storage(centroids), axis=1)
    cuts = local.search_sorted(hist.values, np.arange(rows), (lut[:, 1:] + lut[:, :-1]) / 2, cuts)
    edges = np.concatenate([np.zeros((rows, 1), np.int64), cuts, hist.sizes[:, None].astype(np.int64)], axis=1)
    return np.sort(to_storage(_exact_means(hist, edges, lut)), axis=1)


def _few_distinct(hist: local.Histogram, rows: np.ndarray, k: int) -> np.ndarray:
    """Centroids for rows with at most k distinct values: each value once, then the largest repeated."""
    values = hist.values[rows].astype(np.float64)
    real = np.isfinite(values)
    new = real.copy()
    new[:, 1:] &= values[:, 1:] != values[:, :-1]
    slots = np.cumsum(new, axis=1) - 1
    out = np.full((rows.size, k), -np.inf)
    r, c = np.nonzero(new)
    out[r, slots[r, c]] = values[r, c]
    return np.maximum.accumulate(out, axis=1)


_CODE_SPACE = 1 << 16


def _ordered_codes(values16: np.ndarray) -> np.ndarray:
    """uint16 keys of float16/bfloat16 values that sort like the values (finite values only).

    Sign-magnitude bits become an ordered code by setting the sign bit of
    non-negative values and inverting all bits of negative ones: ``bits ^ (sign
    ? 0xFFFF : 0x8000)``, where the arithmetic shift ``bits >> 15`` of the int16
    view is 0 or all ones (8x faster than looking each value up in a table).
    """
    signed = values16.view(np.int16)
    codes = signed >> 15
    codes |= np.int16(-0x8000)
    codes ^= signed
    return codes.view(np.uint16)


def _code_values(dtype: np.dtype) -> np.ndarray:
    """The value of every ordered code (``_ordered_codes`` inverted), as ``dtype``."""
    codes = np.arange(_CODE_SPACE, dtype=np.uint32)
    bits = np.where(codes & 0x8000, codes ^ 0x8000, ~codes & 0xFFFF).astype(np.uint16)
    return bits.view(dtype)


def _sorted_code_values(dtype: np.dtype) -> np.ndarray:
    """float32 value of every ordered code, non-decreasing: NaN codes become -inf below and +inf above."""
    values = _code_values(dtype).astype(np.float32)
    nan = np.isnan(values)
    values[nan & (np.arange(_CODE_SPACE) < _CODE_SPACE // 2)] = -np.inf
    values[nan & (np.arange(_CODE_SPACE) >= _CODE_SPACE // 2)] = np.inf
    return values


_NEGATIVE_ZERO, _POSITIVE_ZERO = 0x7FFF, 0x8000


#: Values counted at once by ``_code_histogram``: its temporaries (8 bytes per value) then stay in
#: the CPU caches, which made counting about 20 % faster than one pass over a 4 M-value chunk.
_COUNT_BATCH_VALUES = 1 << 19


def _occupied_codes(values16: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entries per row, occupied ordered codes, their counts) of rows of 16-bit floats, row by row
    and code by code. Only codes between the rows' extremes are counted (weights rarely span half
    the code space), which keeps the count table and its scan small."""
    rows = values16.shape[0]
    keys = _ordered_codes(values16).astype(np.intp)  # bincount is several times faster on intp keys
    low = min(int(keys.min()), _NEGATIVE_ZERO)  # both zeros inside, so they can merge
    span = max(int(keys.max()), _POSITIVE_ZERO) - low + 1
    keys += (np.arange(rows, dtype=np.intp) * span - low)[:, None]
    counts = np.bincount(keys.reshape(-1), minlength=rows * span).reshape(rows, span)
    del keys
    counts[:, _POSITIVE_ZERO - low] += counts[:, _NEGATIVE_ZERO - low]  # -0 and +0 are one value
    counts[:, _NEGATIVE_ZERO - low] = 0
    occupied = np.flatnonzero(counts.reshape(-1) != 0)  # 3-6x faster than of the integers themselves
    row_of, code = np.divmod(occupied, span)
    return np.bincount(row_of, minlength=rows), code + low, counts.reshape(-1)[occupied]


def _code_histogram(values16: np.ndarray) -> local.Histogram:
    """The compressed ``Histogram`` of rows of finite 16-bit floats, counted by bit pattern, not
    sorted, a few rows at a time (``_COUNT_BATCH_VALUES``); each row's entries do not depend on
    the rows counted with it."""
    rows = values16.shape[0]
    batch = max(1, _COUNT_BATCH_VALUES // max(values16.shape[1], 1))
    parts = [_occupied_codes(values16[start : start + batch]) for start in range(0, rows, batch)]
    sizes = np.concatenate([part[0] for part in parts])
    occupied = np.concatenate([part[1] for part in parts])
    occupied_counts = np.concatenate([part[2] for part in parts])
    width = max(int(sizes.max()), 1)
    filled = np.arange(width) < sizes[:, None]  # each row's entries first; masks fill in row-major order
    values = np.full((rows, width), np.inf, dtype=np.float32)
    values[filled] = _sorted_code_values(values16.dtype)[occupied]
    entry_counts = np.zeros((rows, width), dtype=np.int64)
    entry_counts[filled] = occupied_counts
    return local.from_packed(values, entry_counts, sizes)


#: Whole-tensor float32/64 rows (at least ``_LONG_ROW`` values) whose only start is a DP (no
#: merge/split moves) keep every ``_SUM_STRIDE``-th running sum only: their search asks for a
#: few thousand sums per row, and the full float64 array was a fifth of their clustering time
#: (MiniLM embedding, 4 bits: 57 ms and 94 MB against 8 ms; MiniLM per-tensor end to end: 4 bits
#: 14 % faster, 6 bits with per-channel scale 22 %). Moves ask for sums so often that 8-bit
#: per-tensor, whose 589,824-value rows get no DP, was 60 % slower with them there.
_SUM_STRIDE = 32


def _exact_histogram(values: np.ndarray, k: int) -> local.Histogram:
    """Each row's values as a ``Histogram`` for clustering into ``k``: counted by bit pattern for long
    16-bit rows, else sorted.

    Float16/bfloat16 rows repeat values a lot and are compressed; float32 rows
    barely do and keep one entry per value. The choices depend on the type, the
    row length and ``k`` only, so a row's result never depends on the rest of its batch.
    """
    if _counted(values):
        return _code_histogram(values)
    n = values.shape[1]
    stride = _SUM_STRIDE if n >= _LONG_ROW and _lone_dp_start(dp_atom_budget(n, k), k) else 1
    return local.histogram(np.sort(_sortable(values), axis=1), compress=values.dtype.itemsize <= 2, sum_stride=stride)


def _rounded(hist: local.Histogram, decimals: int) -> local.Histogram:
    """The histogram of the values rounded to ``decimals`` decimals (in float64: no overflow)."""
    rounded = np.round(hist.values.astype(np.float64), decimals).astype(hist.values.dtype)  # monotone: sorted
    return local.from_entries(rounded, local.entry_counts(hist))


def _rounding_may_fit(hist: local.Histogram, decimals: int, budget: int) -> bool:
    """Whether rounding could bring some row down to ``budget`` distinct values (the only use of rounded values)."""
    if budget == 0:
        return False
    rows = np.arange(hist.sizes.size)
    span = (hist.high(rows) - hist.low(rows)) * 10.0**decimals
    return bool(np.any((hist.sizes > budget) & (span + 2 <= budget)))


#: Sorted rows of one entry per value longer than 16 k first count the distinct values among this
#: many per cluster, evenly spaced (never more distinct ones than the row has), and the whole row
#: only when those have at most ``k``: the full count over the MiniLM embedding took 7 ms, 5 % of
#: its clustering.
_PROBE_PER_CLUSTER = 4


def _at_most_distinct(hist: local.Histogram, k: int) -> np.ndarray:
    """Which rows have at most ``k`` distinct values."""
    if not hist.unit:
        return hist.sizes <= k
    values = hist.values
    n = values.shape[1]
    rows = np.arange(values.shape[0])
    if n > 4 * _PROBE_PER_CLUSTER * k:
        probe = values[:, np.linspace(0, n - 1, _PROBE_PER_CLUSTER * k).astype(np.int64)]
        rows = rows[np.count_nonzero(probe[:, 1:] != probe[:, :-1], axis=1) < k]
    few = np.zeros(values.shape[0], bool)
    few[rows] = np.count_nonzero(values[rows, 1:] != values[rows, :-1], axis=1) < k
    return few


def _counted(values: np.ndarray) -> bool:
    """Whether rows are long 16-bit float rows, which are counted by bit pattern rather than sorted."""
    return values.dtype.itemsize == 2 and values.shape[1] >= _CODE_SPACE // 4


def _nearest_by_code(values16: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``nearest_indices`` for 16-bit rows: per row, a table of the index of every bit pattern.

    Values above a midpoint (rounded down to the value type, as in ``nearest_indices``)
    go to the upper entry, so each entry owns a contiguous range of ordered codes.
    """
    rows, k = lut.shape
    mids = local.round_down((lut[:, 1:] + lut[:, :-1]) / 2.0, np.dtype(np.float32))
    code_values = _sorted_code_values(values16.dtype)
    firsts = np.searchsorted(code_values, mids.reshape(-1), side="right").reshape(rows, k - 1)
    bounds = np.concatenate([np.zeros((rows, 1), np.int64), firsts, np.full((rows, 1), _CODE_SPACE)], axis=1)
    tables = np.repeat(np.tile(np.arange(k, dtype=np.uint8), rows), np.diff(bounds, axis=1).reshape(-1))
    tables = tables.reshape(rows, _CODE_SPACE)
    codes = _ordered_codes(values16)
    out = np.empty(values16.shape, dtype=np.uint8)
    for row in range(rows):
        np.take(tables[row], codes[row], out=out[row])
    return out


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
    if values.shape[0] == 0 or values.shape[1] == 0:
        return np.zeros((values.shape[0], k)), np.zeros(values.shape, dtype=np.uint8)
    hist = _exact_histogram(values, k)
    keys = hist
    if round_decimals is not None and _rounding_may_fit(hist, round_decimals, dp_atom_budget(values.shape[1], k)):
        keys = _rounded(hist, round_decimals)
    centroids = np.empty((values.shape[0], k))
    cuts = np.zeros((values.shape[0], k - 1), np.int64)  # where clusters meet (0: unknown)
    few = _at_most_distinct(hist, k)  # every distinct value gets its own entry: no error at all
    if few.any():
        centroids[few] = _few_distinct(hist, np.flatnonzero(few), k)
    many = np.flatnonzero(~few)
    if many.size:
        centroids[many], cuts[many] = _search(hist, keys, many, values.shape[1], k)
    lut = _fit_exact(hist, centroids, to_storage, cuts)
    del hist, keys  # the sorted copy: the indices can take its memory
    if _counted(values):
        return lut, _nearest_by_code(values, lut)
    return lut, nearest_indices(values, lut)
