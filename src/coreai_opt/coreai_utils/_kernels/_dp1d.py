"""Optimal partition of sorted weighted atoms into k contiguous clusters (1-D k-means).

``D_j[i]`` is the least sum of squared errors of atoms ``0..i`` in ``j``
clusters: ``D_j[i] = min_l D_{j-1}[l-1] + cost(l, i)``, where ``cost`` is the SSE
of atoms ``l..i`` from prefix sums of counts, sums and sums of squares. The best
``l`` is non-decreasing in ``i`` (the cost satisfies the quadrangle inequality),
so each layer is solved by divide and conquer: the middle position of every
interval first, then each half searching only between its neighbours' optima,
and never before the previous layer's optimum at the same position (with one
more cluster, the last one starts no earlier).
The recursion runs level by level, every row and every interval of a level in
one vectorised step, so the work per layer is O(rows * M log M) numpy element
operations and a handful of numpy calls per level. Ties choose the smallest
``l``, which keeps the choice of optima monotone and the result deterministic.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


#: Above this many atoms the divide-and-conquer layer is used. With rows innermost the dense
#: table is 1.4-3x faster up to 128 atoms (k from 4 to 64, batches of 1 to 64 rows) and slower
#: from 256 (measured). The choice must not depend on the batch: the two methods round
#: differently, so near-ties could resolve differently.
DENSE_LIMIT = 128
#: Rows per dense table: about this many (run length, start, row) entries (4 MB of float32), so the
#: table and its layers stay in the caches; with one vector step per run length, tables of 2**20
#: to 2**23 entries took the same time on MiniLM's groups of 2,304 values (measured).
_DENSE_TABLE_ENTRIES = 1 << 20
_TINY = np.finfo(np.float64).tiny


@lru_cache(maxsize=64)
def _levels(size: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]:
    """Per recursion level: (middles, left neighbours, right neighbours, and both clipped) for ``size`` positions.

    The neighbours are the positions just outside the interval (-1 / ``size`` at the ends),
    whose optima bound the middle position's search.
    """
    levels = []
    intervals = [(0, size - 1)]
    while intervals:
        mids, lefts, rights, children = [], [], [], []
        for low, high in intervals:
            mid = (low + high) // 2
            mids.append(mid)
            lefts.append(low - 1)
            rights.append(high + 1)
            if low <= mid - 1:
                children.append((low, mid - 1))
            if mid + 1 <= high:
                children.append((mid + 1, high))
        left, right = np.array(lefts), np.array(rights)
        levels.append((np.array(mids), left, right, np.clip(left, 0, size - 1), np.clip(right, 0, size - 1)))
        intervals = children
    return tuple(levels)


def _layer(previous: np.ndarray, pc: np.ndarray, p1: np.ndarray, p2: np.ndarray, clusters: int,
           floor: np.ndarray):
    """One DP layer: (best cost, best start) for every row and end position, with ``clusters`` clusters.

    ``floor`` holds the previous layer's best starts: with one more cluster the
    last one starts no earlier, so they bound each search from below.

    ``pc``, ``p1``, ``p2`` are (rows, M + 1) prefix sums. With ``i`` fixed per
    interval middle, ``D[l-1] + cost(l, i)`` is ``E[l] + q - (s - P1[l])^2 / (c - PC[l])``
    where ``E[l] = D[l-1] - P2[l]`` and ``q, s, c`` are the prefix sums at ``i + 1``,
    so each candidate costs three gathers.
    """
    rows, size = previous.shape
    stride = size + 1
    shifted = np.full((rows, stride), np.inf)
    shifted[:, 1:] = previous - p2[:, 1:]
    flat_e, flat_p1, flat_pc, flat_p2 = shifted.reshape(-1), p1.reshape(-1), pc.reshape(-1), p2.reshape(-1)
    best = np.full((rows, size), np.inf)
    start = np.zeros((rows, size), dtype=np.int32)
    row_base = (np.arange(rows) * stride)[:, None]
    first = clusters - 1  # the last cluster may start no earlier than atom ``first``
    for mids, lefts, rights, left_at, right_at in _levels(size):
        low = np.where(lefts >= 0, start[:, left_at], 0)
        high = np.where(rights < size, start[:, right_at], mids)
        np.maximum(low, first, out=low)
        np.maximum(low, floor[:, mids], out=low)
        np.minimum(high, mids, out=high)
        valid = (low <= high).reshape(-1)
        widths = np.where(valid, (high - low + 1).reshape(-1), 1)
        offsets = np.cumsum(widths) - widths
        total = int(offsets[-1] + widths[-1])
        segment = np.repeat(np.arange(widths.size), widths)  # the interval middle each candidate serves
        # Flat index of every candidate start into the (rows, M + 1) prefix arrays.
        index = ((row_base + np.minimum(low, mids)).reshape(-1) - offsets).take(segment)
        index += np.arange(total)
        end = (row_base + mids + 1).reshape(-1)
        count = flat_pc.take(end).take(segment)
        count -= flat_pc.take(index)
        spread = flat_p1.take(end).take(segment)
        spread -= flat_p1.take(index)
        spread *= spread
        # Empty runs (padding atoms) have a zero count and exactly zero spread: they cost 0.
        spread /= np.maximum(count, _TINY, out=count)
        value = flat_e.take(index)
        value += np.where(valid, flat_p2.take(end), np.inf).take(segment)
        value -= spread
        seg_min = np.minimum.reduceat(value, offsets)
        ties = np.flatnonzero(value == seg_min.take(segment))  # every interval has its minimum
        first_tie = np.minimum(np.searchsorted(ties, offsets), ties.size - 1)
        chosen = index.take(ties.take(first_tie)) - np.repeat(row_base.reshape(-1), mids.size)
        chosen = np.where(valid, chosen, np.minimum(low, mids).reshape(-1))
        best[:, mids] = seg_min.reshape(rows, mids.size)
        start[:, mids] = chosen.reshape(rows, mids.size)
    return best, start


def _run_costs(pc: np.ndarray, p1: np.ndarray, p2: np.ndarray, starts, ends) -> np.ndarray:
    """SSE of the atoms from ``starts`` up to before ``ends`` (indices into the (M + 1, rows) prefix sums),
    computed in float64 and rounded to float32.

    Empty runs cost 0: their count is clamped to the smallest normal number and
    their sum is exactly 0 (equal prefix sums).
    """
    count = pc[ends] - pc[starts]
    spread = p1[ends] - p1[starts]
    cost = p2[ends] - p2[starts]
    np.maximum(count, _TINY, out=count)
    np.multiply(spread, spread, out=spread)
    np.divide(spread, count, out=spread)
    return np.subtract(cost, spread, out=np.empty(cost.shape, np.float32))


def _window(clusters: int, k: int, size: int) -> tuple[int, int]:
    """Positions [low, high) where the ``clusters``-th of ``k`` clusters over ``size`` atoms may end
    (and, for its predecessor's end plus one, start): one atom for each earlier and each later cluster."""
    return clusters - 1, size - (k - clusters)


def _dense_partition(pc: np.ndarray, p1: np.ndarray, p2: np.ndarray, k: int, longest: int,
                     last: np.ndarray | None) -> np.ndarray:
    """``optimal_partition`` from the full table of run costs, for up to ``DENSE_LIMIT`` atoms.

    The prefix sums come transposed, (M + 1, rows), and scaled so that each row's
    mean square is 1: rows are the innermost axis, so every step is one
    contiguous vector operation over rows (with atoms innermost, numpy looped
    over a few dozen elements at a time and took 2.7 times as long). ``costs[L - 1, l]``
    is the SSE of the ``L`` atoms from ``l``, computed in float64 and kept in float32 (the DP
    ran 20-30 % faster than in float64; a chosen partition's SSE is within about
    1e-6 of the optimum, relative). Runs longer than ``longest`` atoms (at most ``M - k + 1``)
    are never used; ``last`` holds each row's last atom (None: ``M - 1``).
    Layer ``j`` keeps only the least costs ``D_j``, one vector step per run length; the
    backtracking gathers the sums it compares from the same table and layers (so the same
    bits) and takes the first minimum, as the divide-and-conquer layer does.
    """
    width, rows = pc.shape
    size = width - 1
    # costs[length - 1, start]: the SSE of the run of ``length`` atoms from ``start``.
    costs = np.empty((longest, size, rows), np.float32)
    for length in range(1, longest + 1):
        costs[length - 1, : size - length + 1] = _run_costs(pc, p1, p2, slice(0, size - length + 1),
                                                            slice(length, size + 1))
        costs[length - 1, size - length + 1 :] = np.inf  # runs past the last atom
    best = np.full((size, rows), np.inf, np.float32)
    best[:longest] = costs[:, 0]
    layers = [best]
    candidate = np.empty((size, rows), np.float32)
    last_atom = size - 1 if last is None else int(np.min(last))
    # The backtracking picks the last cluster from the layer before it: no layer for all k.
    for clusters in range(2, k):
        low, high = _window(clusters, k, size)
        # Only ends from which the clusters left can still reach the rows' last atom, and starts
        # after an end the layer before can reach: every other entry would be inf or never read
        # (the same bits; at k = 16 over 64 atoms about a fifth fewer entries, the DP 5 % faster).
        first_end = max(low, last_atom - (k - clusters) * longest)
        latest_start = (clusters - 1) * longest
        new = np.full((size, rows), np.inf, np.float32)
        for length in range(1, min(longest, high - low) + 1):
            first = max(low, first_end - length + 1)
            last_start = min(high - length, latest_start)  # the run ends before ``high``
            if last_start < first:
                continue
            run = candidate[: last_start + 1 - first]
            np.add(costs[length - 1, first : last_start + 1], best[first - 1 : last_start], out=run)
            ends = new[first + length - 1 : last_start + length]
            np.minimum(ends, run, out=ends)
        best = new
        layers.append(best)
    # Backtracking compares the same float32 sums the layers did, so it finds their minimum exactly.
    result = np.zeros((rows, k), dtype=np.int64)
    end = np.full(rows, size - 1) if last is None else last
    row_index = np.arange(rows)
    lengths = np.arange(longest, 0, -1)[:, None]  # the run ending at ``end``: starts ascending
    flat_costs = costs.reshape(-1)
    for clusters in range(k, 1, -1):
        starts = end + 1 - lengths
        allowed = starts >= clusters - 1  # one atom for each earlier cluster
        starts = np.where(allowed, starts, clusters - 1)
        total = flat_costs.take(((lengths - 1) * size + starts) * rows + row_index)
        total += layers[clusters - 2].reshape(-1).take((starts - 1) * rows + row_index)
        total[~allowed] = np.inf
        result[:, clusters - 1] = starts[(total == total.min(axis=0)).argmax(axis=0), row_index]  # the first minimum
        end = result[:, clusters - 1] - 1
    return result


def _last_atoms(counts: np.ndarray, k: int) -> np.ndarray:
    """Each row's last atom of non-zero count, at least ``k - 1`` (k clusters need k atoms)."""
    size = counts.shape[1]
    last = size - 1 - np.argmax(counts[:, ::-1] > 0, axis=1)
    return np.maximum(last, k - 1)


def _unit_mean_square(pc: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``p1`` and ``p2`` of rows scaled to a mean square of 1 (rows of zeros unscaled), so that
    float32 run costs neither overflow nor underflow whatever the values' magnitude."""
    with np.errstate(divide="ignore", invalid="ignore"):
        square = p2[:, -1:] / pc[:, -1:]
    square = np.where(square > 0, square, 1.0)
    return p1 / np.sqrt(square), p2 / square


def optimal_partition(counts: np.ndarray, sums: np.ndarray, squares: np.ndarray, k: int,
                      longest_run: int | None = None) -> np.ndarray:
    """Start atom of each of ``k`` clusters minimising the SSE, per row: (rows, k) int.

    ``counts``, ``sums`` and ``squares`` are (rows, M): weight, weighted sum and
    weighted sum of squares of each atom, atoms sorted by value along each row.
    Atoms of zero count may pad a row at the end. Needs ``k <= M``.
    ``longest_run`` (at least M / k; up to ``DENSE_LIMIT`` atoms only) makes it the best partition
    whose clusters span at most that many atoms up to each row's last non-empty one (the padding
    joins the last cluster): the dense table's work shrinks with it (k = 16 over 64 atoms: runs of
    up to 16 atoms instead of 49, a third).
    """
    rows, size = counts.shape
    if not 1 <= k <= size:
        raise ValueError(f"k must be in [1, {size}] (the number of atoms); got {k}")
    if longest_run is not None and (longest_run * k < size or size > DENSE_LIMIT):
        raise ValueError(f"longest_run needs at least M / k atoms and M <= {DENSE_LIMIT}; got {longest_run} "
                         f"for M = {size}, k = {k}")
    if rows == 0:
        return np.zeros((0, k), dtype=np.int64)
    zero = np.zeros((rows, 1))
    pc = np.concatenate([zero, np.cumsum(counts, axis=1)], axis=1)
    p1 = np.concatenate([zero, np.cumsum(sums, axis=1)], axis=1)
    p2 = np.concatenate([zero, np.cumsum(squares, axis=1)], axis=1)
    if size <= DENSE_LIMIT:
        longest = min(size - k + 1, longest_run or size)  # the other clusters hold at least one atom each
        chunk = max(1, _DENSE_TABLE_ENTRIES // (size * longest))
        prefix = [np.ascontiguousarray(p.T) for p in (pc, *_unit_mean_square(pc, p1, p2))]
        last = None if longest_run is None else _last_atoms(counts, k)
        parts = []
        for r in range(0, rows, chunk):
            table = [np.ascontiguousarray(p[:, r : r + chunk]) for p in prefix]  # contiguous: flat gathers
            parts.append(_dense_partition(*table, k, longest, None if last is None else last[r : r + chunk]))
        return np.concatenate(parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        best = np.where(pc[:, 1:] > 0, p2[:, 1:] - p1[:, 1:] ** 2 / pc[:, 1:], 0.0)
    starts = [np.zeros((rows, size), dtype=np.int32)]
    for clusters in range(2, k + 1):
        best, start = _layer(best, pc, p1, p2, clusters, starts[-1])
        starts.append(start)
    result = np.zeros((rows, k), dtype=np.int64)
    end = np.full(rows, size - 1)
    row_index = np.arange(rows)
    for cluster in range(k - 1, -1, -1):
        begin = starts[cluster][row_index, end].astype(np.int64)
        result[:, cluster] = begin
        end = np.maximum(begin - 1, 0)
    return result
