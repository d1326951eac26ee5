"""Local search for 1-D k-means on histograms: Lloyd iterations and merge/split moves.

Every function works on many rows at once. A row is its sorted distinct values
with their multiplicities (a ``Histogram``) and running sums of counts and of
values, so a cluster (a contiguous run of distinct values) has its count and
mean in O(1), and cluster boundaries come from binary searches of centroid
midpoints. Working on distinct values makes rounded (fast mode) and float16
rows, which repeat values heavily, cheap. Rows are never compared with each
other, so a row's result does not depend on its batch.

Lloyd iterations alone stop in poor local optima when a row has heavy tails
(e.g. two outliers sharing a cluster with the bulk). A merge/split move fixes
that: merge the two adjacent clusters that cost least to merge and split the
cluster that gains most from splitting (its two halves found by 2-means), when
the gain exceeds the cost. Both amounts come from counts and means alone:
merging clusters a and b adds ``n_a n_b / (n_a + n_b) * (mean_a - mean_b)^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SMALL_BATCH = 8
#: ``search_sorted`` searches row by row (one ``np.searchsorted`` each) up to ``_SMALL_BATCH`` rows,
#: or up to ``_FEW_ROWS`` rows of at most ``_FEW_POINTS`` points: there the vectorised binary
#: search's per-step calls cost more (measured 1.3-3x slower). Both give the same counts.
_FEW_ROWS, _FEW_POINTS = 32, 63
_MAX_LLOYD_STEPS = 100
_MAX_MOVES = 8
_SPLIT_STEPS = 3
#: A row stops iterating when no centroid moves more than this fraction of its average cluster
#: width (value range / k): with many clusters a fixed fraction of the range stops too early.
#: (4e-4 / k is 2.5e-5 of the range at k = 16; 1.6e-3 stopped about 0.03 % of the error short
#: on 65,536-value float16 groups.)
_TOLERANCE = 4e-4
#: Moves stop when one would lower a row's error by less than this fraction.
_MOVE_GAIN = 1e-4


@dataclass(frozen=True)
class Histogram:
    """Each row's sorted values (distinct, with counts, or one entry per value) and running sums.

    Compressed rows are padded with +inf entries of count 0.
    """

    values: np.ndarray  # (rows, m), float32 or float64
    counts: np.ndarray | None  # (rows, m + 1) int64: values before each position (None when unit: the positions)
    # (rows, m // sum_stride + 1) float64: sum of the values before every ``sum_stride``-th position
    # (each position but on long unit rows; ``sums_at`` adds up the rest when asked)
    sums: np.ndarray
    sizes: np.ndarray  # (rows,) entries per row
    unit: bool = False  # one entry per value (counts are positions)
    sum_stride: int = 1

    @property
    def width(self) -> int:
        return self.values.shape[1]

    def sums_at(self, at: np.ndarray) -> np.ndarray:
        """Sum of the values before each flat position ``at`` (row * (width + 1) + position), float64."""
        if self.sum_stride == 1:
            return self.sums.reshape(-1)[at]
        row, position = np.divmod(at, self.width + 1)
        stride, rest = np.divmod(position, self.sum_stride)
        first = row * self.width + stride * self.sum_stride  # the values after the stored sum, up to ``position``
        offsets = np.arange(self.sum_stride)
        window = self.values.reshape(-1)[np.minimum(first[..., None] + offsets, self.values.size - 1)]
        partial = np.where(offsets < rest[..., None], window, 0).sum(axis=-1, dtype=np.float64)
        return self.sums[row, stride] + partial

    def low(self, rows: np.ndarray) -> np.ndarray:
        return self.values[rows, 0].astype(np.float64)

    def high(self, rows: np.ndarray) -> np.ndarray:
        return self.values[rows, self.sizes[rows] - 1].astype(np.float64)

    def squares(self, rows: np.ndarray) -> np.ndarray:
        """Sum of squared values of each listed row."""
        if self.unit:
            values = self.values[rows]
            return np.einsum("ij,ij->i", values, values, dtype=np.float64)
        counts = np.diff(self.counts[rows], axis=1)
        values = np.where(counts > 0, self.values[rows].astype(np.float64), 0.0)
        return np.einsum("ij,ij,ij->i", counts.astype(np.float64), values, values)


def histogram(sorted_rows: np.ndarray, compress: bool = True, sum_stride: int = 1) -> Histogram:
    """The ``Histogram`` of rows already sorted along axis 1.

    ``compress`` merges equal values into one entry with its count (worth it for
    float16 or rounded rows, which repeat values heavily). Otherwise every value
    is its own entry: equal values still always fall on the same side of a
    boundary, which is all the search needs, and building it is one running sum,
    or, with ``sum_stride`` > 1, one every ``sum_stride`` values (``sums_at`` adds
    up the rest when asked: cheaper where few sums are asked for per value).
    """
    rows, n = sorted_rows.shape
    if not compress:
        sums = _running_sums(sorted_rows) if sum_stride == 1 else _strided_sums(sorted_rows, sum_stride)
        return Histogram(sorted_rows, None, sums, np.full(rows, n, dtype=np.int64), unit=True, sum_stride=sum_stride)
    new = np.ones((rows, n), dtype=bool)
    new[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    starts = np.flatnonzero(new)  # flat positions where a new distinct value begins
    row_of = starts // n
    sizes = np.bincount(row_of, minlength=rows)
    width = int(sizes.max())
    first = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(sizes, out=first[1:])
    slot = row_of * width + (np.arange(starts.size) - first[row_of])
    ends = np.empty_like(starts)
    ends[:-1] = np.where(row_of[1:] == row_of[:-1], starts[1:], (row_of[:-1] + 1) * n)
    ends[-1] = rows * n
    values = np.full(rows * width, np.inf, dtype=sorted_rows.dtype)
    values[slot] = sorted_rows.reshape(-1)[starts]
    counts = np.zeros(rows * width, dtype=np.int64)
    counts[slot] = ends - starts
    return from_packed(values.reshape(rows, width), counts.reshape(rows, width), sizes)


def _strided_sums(sorted_rows: np.ndarray, stride: int) -> np.ndarray:
    """(rows, n // stride + 1) float64: each row's sum before every ``stride``-th position, 0 first
    (block totals in float64 without a widened copy of the rows, then their running sum)."""
    rows, n = sorted_rows.shape
    count = n // stride
    sums = np.zeros((rows, count + 1))
    blocks = sorted_rows[:, : count * stride].reshape(rows, count, stride)
    np.einsum("rsb->rs", blocks, dtype=np.float64, out=sums[:, 1:])
    np.cumsum(sums[:, 1:], axis=1, out=sums[:, 1:])
    return sums


#: Values widened to float64 at a time by ``_running_sums`` and ``run_sums`` (at once, a
#: whole-tensor row needed a temporary copy as large as its sums: 94 MB for the MiniLM embedding;
#: ``np.add.reduceat`` with a wider dtype also copies its whole input first).
_WIDEN_BLOCK = 1 << 18


def _running_sums(sorted_rows: np.ndarray) -> np.ndarray:
    """(rows, n + 1) float64 running sums of each row, 0 first.

    float32 rows are summed in fixed point (``_fixed_point_sums``); others, and
    float32 rows of extreme magnitude, in float64 (``_float64_sums``).
    """
    rows, n = sorted_rows.shape
    sums = np.empty((rows, n + 1))  # every column but the first is written below (no zeroing pass)
    sums[:, 0] = 0.0
    if not n or sorted_rows.dtype != np.float32:
        _float64_sums(sorted_rows, sums)
        return sums
    shift = _fixed_point_shift(sorted_rows)
    _fixed_point_sums(sorted_rows, np.minimum(shift, _FLOAT32_SHIFT), sums)  # a smaller scale cannot overflow
    extreme = np.flatnonzero(shift > _FLOAT32_SHIFT)
    if extreme.size:
        extreme_sums = np.zeros((extreme.size, n + 1))
        _float64_sums(sorted_rows[extreme], extreme_sums)
        sums[extreme] = extreme_sums
    return sums


def _float64_sums(sorted_rows: np.ndarray, sums: np.ndarray) -> None:
    """Running sums of the rows into ``sums`` ((rows, n + 1), first column 0), block by block: each
    block is widened into place and summed on from the previous total, as one ``np.cumsum`` would."""
    n = sorted_rows.shape[1]
    for start in range(0, n, _WIDEN_BLOCK):
        block = sums[:, 1 + start : 1 + min(n, start + _WIDEN_BLOCK)]
        block[...] = sorted_rows[:, start : start + _WIDEN_BLOCK]
        block[:, 0] += sums[:, start]
        np.cumsum(block, axis=1, out=block)


#: Fixed-point running sums use int64 with one bit to spare: each row's values are scaled by a power
#: of two that keeps its largest magnitude times its length below 2**62, so no sum overflows. numpy
#: adds int64 running sums about 7x faster than float64 ones (whose order it keeps), and truncating
#: to 2**-(61 - log2 n) of the row's largest value errs less than float64 summation. 4 M float32
#: values in groups of 2,304: 10 ms against 18 ms.
_FIXED_POINT_BITS = 61
#: The largest scale applied in float32 (a normal float32): rows that need more (largest magnitude
#: below about 2**-75) are summed the float64 way. The smallest a float32 row needs is above 2**-110.
_FLOAT32_SHIFT = 126


def _fixed_point_shift(sorted_rows: np.ndarray) -> np.ndarray:
    """Per row, the power of two its values are scaled by for fixed-point sums (int64)."""
    n = sorted_rows.shape[1]
    peak = np.maximum(np.abs(sorted_rows[:, 0]), np.abs(sorted_rows[:, -1])).astype(np.float64)
    return _FIXED_POINT_BITS - n.bit_length() - np.frexp(peak)[1].astype(np.int64)


def _fixed_point_sums(sorted_rows: np.ndarray, shift: np.ndarray, sums: np.ndarray) -> None:
    """Running sums of float32 rows into ``sums``: the values scaled by 2**shift (exactly, in
    float32), truncated to int64 and summed exactly, a few rows (or one long row's blocks) at a time."""
    rows, n = sorted_rows.shape
    batch = max(1, _WIDEN_BLOCK // n)
    for first in range(0, rows, batch):
        last = min(rows, first + batch)
        scale = np.ldexp(np.float32(1), shift[first:last])[:, None]
        unscale = np.ldexp(1.0, -shift[first:last])[:, None]
        carry = np.zeros((last - first, 1), np.int64)
        for start in range(0, n, _WIDEN_BLOCK):
            stop = min(n, start + _WIDEN_BLOCK)
            fixed = np.multiply(sorted_rows[first:last, start:stop], scale).astype(np.int64)
            fixed[:, :1] += carry
            np.cumsum(fixed, axis=1, out=fixed)
            carry = fixed[:, -1:]
            out = sums[first:last, 1 + start : 1 + stop]
            np.copyto(out, fixed)
            out *= unscale


def run_sums(flat: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """float64 sum of each run ``flat[starts[j] : starts[j + 1]]`` (the last one to the end).

    ``starts`` is non-decreasing from 0; equal starts make empty runs (sum 0). Each
    block of ``_WIDEN_BLOCK`` values is widened and cut at the run starts inside
    it, and a run adds its pieces in order.
    """
    blocks = np.arange(0, flat.size, _WIDEN_BLOCK)
    inside = starts[starts < flat.size]
    cuts = np.insert(inside, np.searchsorted(inside, blocks), blocks)  # both sorted: merged in order
    new = np.ones(cuts.size, bool)
    new[1:] = cuts[1:] != cuts[:-1]
    cuts = cuts[new]  # as np.union1d, which sorted them again (3 ms per 29 k runs)
    first_cut = np.searchsorted(cuts, blocks)
    pieces = np.empty(cuts.size)
    for block, low, high in zip(blocks, first_cut, [*first_cut[1:], cuts.size], strict=True):
        widened = flat[block : block + _WIDEN_BLOCK].astype(np.float64)
        pieces[low:high] = np.add.reduceat(widened, cuts[low:high] - block)
    return np.bincount(np.searchsorted(starts, cuts, side="right") - 1, weights=pieces, minlength=starts.size)


def _flat(hist: Histogram, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Flat indices of each listed row's ``positions`` (rows, p) into the running counts and sums."""
    return (rows.astype(np.int64) * (hist.width + 1))[:, None] + positions


def running_counts(hist: Histogram, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """How many values of each listed row lie before each of its ``positions`` (rows, p)."""
    return _counts_at(hist, _flat(hist, rows, positions), positions)


def running_sums(hist: Histogram, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """float64 sum of the values of each listed row before each of its ``positions`` (rows, p)."""
    return hist.sums_at(_flat(hist, rows, positions))


def from_entries(values: np.ndarray, counts: np.ndarray) -> Histogram:
    """A compressed ``Histogram`` from sorted (rows, m) values with counts; equal values merge, empty ones go."""
    rows, m = values.shape
    new = np.ones((rows, m), dtype=bool)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    group = (np.arange(rows, dtype=np.int64)[:, None] * m + np.cumsum(new, axis=1) - 1).reshape(-1)
    totals = np.bincount(group, weights=counts.reshape(-1), minlength=rows * m).reshape(rows, m)
    firsts = values.reshape(-1)[np.flatnonzero(new.reshape(-1))]
    group_values = np.full(rows * m, np.inf, dtype=values.dtype)
    group_values[group[new.reshape(-1)]] = firsts
    occupied = totals > 0
    sizes = occupied.sum(axis=1)
    width = max(int(sizes.max()), 1)
    slot = np.cumsum(occupied, axis=1) - 1
    where = np.flatnonzero(occupied.reshape(-1))
    target = (where // m) * width + slot.reshape(-1)[where]
    packed_values = np.full(rows * width, np.inf, dtype=values.dtype)
    packed_values[target] = group_values[where]
    packed_counts = np.zeros(rows * width, dtype=np.int64)
    packed_counts[target] = totals.reshape(-1)[where].astype(np.int64)
    return from_packed(packed_values.reshape(rows, width), packed_counts.reshape(rows, width), sizes)


def from_packed(values: np.ndarray, counts: np.ndarray, sizes: np.ndarray) -> Histogram:
    """A compressed ``Histogram`` from distinct sorted (rows, m) values, +inf-padded after ``sizes``, with counts."""
    rows, width = values.shape
    running = np.zeros((rows, width + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=running[:, 1:])
    sums = np.zeros((rows, width + 1))
    weighted = counts * np.where(counts > 0, values.astype(np.float64), 0.0)  # equal values: exact sums
    np.cumsum(weighted, axis=1, out=sums[:, 1:])
    return Histogram(values, running, sums, sizes)


def entry_counts(hist: Histogram) -> np.ndarray:
    """(rows, m) count of each entry."""
    return np.diff(hist.counts, axis=1) if not hist.unit else np.ones(hist.values.shape, dtype=np.int64)


def round_down(points: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Largest ``dtype`` value <= each float64 point, so ``x > p`` equals ``x > result`` for x of ``dtype``."""
    narrow = points.astype(dtype)
    above = narrow.astype(np.float64) > points
    return np.where(above, np.nextafter(narrow, dtype.type(-np.inf)), narrow)


def _search(flat: np.ndarray, base: np.ndarray, thresholds: np.ndarray, n) -> np.ndarray:
    """Branchless binary search: how many of the n sorted values at ``flat[base:]`` are <= each threshold
    (``n`` a number, or an array with one length per threshold)."""
    position = np.zeros(thresholds.shape, dtype=np.int64)
    longest = int(np.max(n, initial=0))
    step = 1 << (longest.bit_length() - 1) if longest else 0
    while step:
        candidate = position + step
        value = flat[base + np.minimum(candidate, n) - 1]
        position = np.where((candidate <= n) & (value <= thresholds), candidate, position)
        step >>= 1
    return position


def _answer_within(flat: np.ndarray, base: np.ndarray, thresholds: np.ndarray, low: np.ndarray, high: np.ndarray,
                   n: int) -> np.ndarray:
    """Whether the count of the n sorted values at ``flat[base:]`` that are <= each threshold lies in
    [low, high]: the value before ``low`` is <= it and the value at ``high`` is above it."""
    within = (low == 0) | (flat[base + np.maximum(low - 1, 0)] <= thresholds)
    within &= (high == n) | (flat[base + np.minimum(high, n - 1)] > thresholds)
    return within


#: Entries on either side of a stale guess searched first: between Lloyd iterations most cluster
#: edges move by a few entries (k = 256 on 147 k-value rows: 92 % of the moved ones by <= 16).
_NEAR = 16


def _search_near(flat: np.ndarray, base: np.ndarray, thresholds: np.ndarray, guess: np.ndarray,
                 n: int) -> np.ndarray:
    """``_search`` for thresholds whose answer is probably within ``_NEAR`` entries of ``guess``:
    a short search inside that window where it holds the answer, a full one elsewhere."""
    low, high = np.maximum(guess - _NEAR, 0), np.minimum(guess + _NEAR, n)
    inside = _answer_within(flat, base, thresholds, low, high, n)
    result = np.empty(thresholds.shape, dtype=np.int64)
    result[inside] = low[inside] + _search(flat, base[inside] + low[inside], thresholds[inside],
                                           high[inside] - low[inside])
    far = ~inside
    if far.any():
        result[far] = _search(flat, base[far], thresholds[far], n)
    return result


def search_sorted(sorted_rows: np.ndarray, rows: np.ndarray, points: np.ndarray,
                  guess: np.ndarray | None = None) -> np.ndarray:
    """For each listed row, how many of its sorted entries are <= each point: (len(rows), p) int64.

    ``guess`` (same shape) holds earlier answers; only the ones that changed are searched,
    near their guess first.
    """
    n = sorted_rows.shape[1]
    if rows.size <= _SMALL_BATCH or (rows.size <= _FEW_ROWS and points.shape[1] <= _FEW_POINTS):
        thresholds = round_down(points, sorted_rows.dtype) if sorted_rows.dtype.kind == "f" else points
        return np.stack([np.searchsorted(sorted_rows[r], t, side="right") for r, t in zip(rows, thresholds)])
    thresholds = points  # comparing float32 entries with float64 points is exact
    flat = sorted_rows.reshape(-1)
    base = np.broadcast_to((rows.astype(np.int64) * n)[:, None], points.shape)
    if guess is None:
        return _search(flat, base, thresholds, n)
    still = _answer_within(flat, base, thresholds, guess, guess, n)
    result = guess.copy()
    stale = ~still
    if stale.any():
        result[stale] = _search_near(flat, base[stale], thresholds[stale], guess[stale], n)
    return result


def _counts_at(hist: Histogram, at: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Running counts at flat indices ``at`` (``positions`` within the row, for one-entry-per-value rows)."""
    return positions if hist.unit else hist.counts.reshape(-1)[at]


def run_stats(hist: Histogram, rows: np.ndarray, bounds: np.ndarray, fallback):
    """(counts, means) of the runs [bounds[:, j], bounds[:, j+1]) of the listed rows; ``fallback`` if empty."""
    at = _flat(hist, rows, bounds)
    counts = np.diff(_counts_at(hist, at, bounds), axis=1)
    sums = np.diff(hist.sums_at(at), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return counts, np.where(counts > 0, sums / counts, fallback)


def _edges(cuts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((cuts.shape[0], 1), np.int64), cuts, sizes[:, None].astype(np.int64)], axis=1)


def lloyd(hist: Histogram, rows: np.ndarray, centroids: np.ndarray, guess: np.ndarray | None = None):
    """Lloyd iterations for the listed rows: (centroids, counts, cluster edges) at convergence.

    ``guess`` are cluster edges from a nearby solution, to speed up the first searches.
    """
    centroids = centroids.copy()
    k = centroids.shape[1]
    edges = np.zeros((rows.size, k + 1), dtype=np.int64)
    counts = np.zeros((rows.size, k), dtype=np.int64)
    spread = hist.high(rows) - hist.low(rows)
    sizes = hist.sizes[rows]
    previous = None if guess is None else guess[:, 1:-1].copy()
    active = np.arange(rows.size)
    for step in range(_MAX_LLOYD_STEPS):
        current = centroids[active]
        cuts = search_sorted(hist.values, rows[active], (current[:, 1:] + current[:, :-1]) / 2,
                             None if previous is None else previous[active])
        moved = np.ones(active.size, bool) if previous is None or step == 0 else \
            (cuts != previous[active]).any(axis=1)
        if previous is None:
            previous = np.empty((rows.size, k - 1), dtype=np.int64)
        previous[active] = cuts
        edges[active] = _edges(cuts, sizes[active])
        counts[active], updated = run_stats(hist, rows[active], edges[active], current)
        centroids[active] = updated
        shift = np.abs(updated - current).max(axis=1)
        active = active[moved & (shift > _TOLERANCE / k * spread[active])]
        if active.size == 0:
            break
    return centroids, counts, edges


def _run_means(hist: Histogram, rows: np.ndarray, low: np.ndarray, high: np.ndarray):
    """(counts, means) of each run [low, high) of the listed rows (mean 0 where empty); low/high (rows, j)."""
    width = hist.width + 1
    base = (rows.astype(np.int64) * width)[:, None]
    counts = _counts_at(hist, base + high, high) - _counts_at(hist, base + low, low)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = (hist.sums_at(base + high) - hist.sums_at(base + low)) / counts
    return counts, np.where(counts > 0, means, 0.0)


def _best_splits(hist: Histogram, rows, edges, means):
    """For each cluster, the best of a few 2-way splits: (gain, left mean, right mean)."""
    low, high = edges[:, :-1], edges[:, 1:]
    lo_cut, hi_cut = np.minimum(low + 1, high), np.maximum(high - 1, low)
    cut = np.clip(search_sorted(hist.values, rows, means), lo_cut, hi_cut)
    for _ in range(_SPLIT_STEPS):  # 2-means within the cluster, from a cut at its mean
        _, left = _run_means(hist, rows, low, cut)
        _, right = _run_means(hist, rows, cut, high)
        cut = np.clip(search_sorted(hist.values, rows, (left + right) / 2, cut), lo_cut, hi_cut)
    best_gain = np.full(low.shape, -np.inf)
    best_left, best_right = np.zeros(low.shape), np.zeros(low.shape)
    # Also try peeling off the extreme value at either end: that is what heavy tails need.
    for option in (cut, lo_cut, hi_cut):
        n_left, left = _run_means(hist, rows, low, option)
        n_right, right = _run_means(hist, rows, option, high)
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = n_left * n_right / (n_left + n_right) * np.square(left - right)
        gain = np.where((high - low >= 2) & (n_left > 0) & (n_right > 0), gain, -np.inf)
        better = gain > best_gain
        best_gain = np.where(better, gain, best_gain)
        best_left = np.where(better, left, best_left)
        best_right = np.where(better, right, best_right)
    return best_gain, best_left, best_right


def _merge_costs(counts: np.ndarray, means: np.ndarray) -> np.ndarray:
    a, b = counts[:, :-1].astype(np.float64), counts[:, 1:].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = a * b / (a + b) * np.square(means[:, :-1] - means[:, 1:])
    return np.where(a + b > 0, cost, 0.0)


def _apply_moves(means, counts, gain, left, right, merge, threshold):
    """Centroids after as many disjoint paying moves as each row offers: (new centroids, total net gain).

    Moves pair the i-th best split with the i-th cheapest merge of two adjacent
    clusters; a pair is taken when it pays more than ``threshold`` and touches no
    cluster an earlier pair of the same row touched.
    """
    rows, k = means.shape
    r = np.arange(rows)
    merge_order = np.argsort(merge, axis=1, kind="stable")
    split_order = np.argsort(-gain, axis=1, kind="stable")
    used = np.zeros((rows, k), dtype=bool)
    updated = means.copy()
    total = np.zeros(rows)
    for rank in range(k - 1):
        p, j = merge_order[:, rank], split_order[:, rank]
        net = gain[r, j] - merge[r, p]
        free = ~(used[r, p] | used[r, p + 1] | used[r, j]) & (j != p) & (j != p + 1)
        take = free & (net > threshold)
        if not take.any():
            if (net <= threshold).all():
                break
            continue
        t, pt, jt = r[take], p[take], j[take]
        merged_count = counts[t, pt] + counts[t, pt + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            merged = np.where(merged_count > 0,
                              (counts[t, pt] * means[t, pt] + counts[t, pt + 1] * means[t, pt + 1]) / merged_count,
                              means[t, pt])
        updated[t, jt] = left[t, jt]
        updated[t, pt] = right[t, jt]
        updated[t, pt + 1] = merged
        used[t, pt] = used[t, pt + 1] = used[t, jt] = True
        total[take] += net[take]
    return np.sort(updated, axis=1), total


def _fill_empty(hist: Histogram, rows, centroids, counts, edges):
    """Give empty clusters' entries to the clusters that gain most from a split: (rows changed, centroids)."""
    empty = counts == 0
    needy = np.flatnonzero(empty.any(axis=1))
    if needy.size == 0:
        return needy, centroids[:0]
    gain, left, right = _best_splits(hist, rows[needy], edges[needy], centroids[needy])
    gain = np.where(gain > 0, gain, -np.inf)
    order = np.argsort(-gain, axis=1, kind="stable")  # clusters by split gain, best first
    slots = np.argsort(~empty[needy], axis=1, kind="stable")  # empty clusters first
    updated = centroids[needy].copy()
    r = np.arange(needy.size)
    for rank in range(centroids.shape[1]):
        split, slot = order[:, rank], slots[:, rank]
        usable = empty[needy][r, slot] & np.isfinite(gain[r, split])
        if not usable.any():
            break
        updated[r[usable], split[usable]] = left[r[usable], split[usable]]
        updated[r[usable], slot[usable]] = right[r[usable], split[usable]]
    return needy, np.sort(updated, axis=1)


def lloyd_filled(hist: Histogram, rows, centroids, guess: np.ndarray | None = None, rounds: int = 4):
    """Lloyd iterations (first searches near ``guess``, cluster edges) that re-seed empty clusters by
    splitting the best candidates."""
    centroids, counts, edges = lloyd(hist, rows, centroids, guess)
    for _ in range(rounds):
        needy, seeded = _fill_empty(hist, rows, centroids, counts, edges)
        if needy.size == 0:
            break
        new_centroids, new_counts, new_edges = lloyd(hist, rows[needy], seeded)
        improved = between_sum(new_counts, new_centroids) > between_sum(counts[needy], centroids[needy])
        chosen = needy[improved]
        if chosen.size == 0:
            break
        centroids[chosen], counts[chosen], edges[chosen] = (new_centroids[improved], new_counts[improved],
                                                            new_edges[improved])
    return centroids, counts, edges


def improve(hist: Histogram, rows: np.ndarray, centroids: np.ndarray, squares: np.ndarray | None,
            guess: np.ndarray | None = None):
    """Lloyd plus merge/split moves while they pay, for the listed rows: (centroids, cluster counts,
    cluster edges).

    ``squares`` is each listed row's sum of squares, to judge gains against its
    error; None makes no moves. ``guess``: cluster edges near the first ones (or None).
    """
    centroids, counts, edges = lloyd_filled(hist, rows, centroids, guess)
    active = np.arange(rows.size)
    for _ in range(_MAX_MOVES if squares is not None else 0):
        gain, left, right = _best_splits(hist, rows[active], edges[active], centroids[active])
        merge = _merge_costs(counts[active], centroids[active])
        error = np.maximum(squares[active] - between_sum(counts[active], centroids[active]), 0.0)
        threshold = _MOVE_GAIN * error
        moved, net = _apply_moves(centroids[active], counts[active], gain, left, right, merge, threshold)
        worth = net > threshold
        if not worth.any():
            break
        active = active[worth]
        new_centroids, new_counts, new_edges = lloyd(hist, rows[active], moved[worth], edges[active])
        centroids[active], counts[active], edges[active] = new_centroids, new_counts, new_edges
    return centroids, counts, edges


def between_sum(counts: np.ndarray, means: np.ndarray) -> np.ndarray:
    """sum_c n_c mean_c^2 per row: the larger it is, the smaller the SSE of the partition."""
    return np.sum(counts * np.square(means), axis=1)
