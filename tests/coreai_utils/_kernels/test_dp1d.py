"""The divide-and-conquer and dense DPs find the optimal contiguous partition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coreai_opt.coreai_utils._kernels import _dp1d
from coreai_opt.coreai_utils._kernels._dp1d import optimal_partition


def _sse(x, w, starts, skip_empty=False):
    bounds = list(starts) + [len(x)]
    total = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a and not (skip_empty and w[a:b].sum() == 0):
            mean = (w[a:b] * x[a:b]).sum() / w[a:b].sum()
            total += (w[a:b] * (x[a:b] - mean) ** 2).sum()
    return total


def _brute(x, w, k):
    return min(_sse(x, w, (0,) + cuts) for cuts in itertools.combinations(range(1, len(x)), k - 1))


@pytest.mark.parametrize("dense", [True, False])
def test_matches_brute_force(dense):
    original = _dp1d.DENSE_LIMIT
    _dp1d.DENSE_LIMIT = 10**6 if dense else 0
    try:
        _check_against_brute_force(1e-6 if dense else 1e-12)
    finally:
        _dp1d.DENSE_LIMIT = original


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def _check_against_brute_force(rounding, data):
    m = data.draw(st.integers(2, 10))
    k = data.draw(st.integers(1, m))
    scale = data.draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e6]))
    x = np.sort(np.array(data.draw(st.lists(st.floats(-1, 1), min_size=m, max_size=m)))) * scale
    w = np.array(data.draw(st.lists(st.integers(1, 4), min_size=m, max_size=m)), dtype=np.float64)
    starts = optimal_partition(w[None], (w * x)[None], (w * x * x)[None], k)[0]
    assert starts[0] == 0 and (np.diff(starts) > 0).all()
    # Optimal up to rounding relative to the row's magnitude (the dense table keeps float32 costs).
    assert _sse(x, w, starts) <= _brute(x, w, k) + rounding * float((w * x * x).sum()) + 1e-300


def test_rows_are_solved_independently():
    rng = np.random.default_rng(0)
    x = np.sort(rng.standard_normal((6, 300)), axis=1)
    w = np.ones_like(x)
    together = optimal_partition(w, x, x * x, 8)
    for r in range(6):
        np.testing.assert_array_equal(optimal_partition(w[r : r + 1], x[r : r + 1], x[r : r + 1] ** 2, 8)[0],
                                      together[r])


def _dense_and_divided(x, w, k):
    """The partitions of the dense table and of the divide-and-conquer layers."""
    results = []
    original = _dp1d.DENSE_LIMIT
    for limit in (10**6, 0):
        _dp1d.DENSE_LIMIT = limit
        try:
            results.append(optimal_partition(w, w * x, w * x * x, k))
        finally:
            _dp1d.DENSE_LIMIT = original
    return results


@pytest.mark.parametrize("size,k", [(16, 2), (16, 8), (40, 16), (64, 16), (64, 32), (64, 63)])
def test_dense_and_divide_and_conquer_agree_on_padded_rows(size, k):
    """Both layers give partitions of equal error, also with empty atoms padding the end of a row."""
    rng = np.random.default_rng(size * 100 + k)
    x = np.sort(rng.standard_t(3, (12, size)), axis=1)
    w = rng.integers(1, 5, (12, size)).astype(np.float64)
    w[::3, size // 2 :] = 0.0  # rows padded with empty atoms
    results = _dense_and_divided(x, w, k)
    for row in range(12):
        dense, divided = (_sse(x[row], w[row], starts[row], skip_empty=True) for starts in results)
        assert dense == pytest.approx(divided, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_dense_table_handles_extreme_magnitudes(scale):
    """Its float32 costs come from rows scaled to a unit mean square: no overflow or underflow."""
    rng = np.random.default_rng(3)
    x = np.sort(rng.standard_normal((5, 40)), axis=1)
    w = np.ones_like(x)
    expected = optimal_partition(w, x, x * x, 6)
    np.testing.assert_array_equal(optimal_partition(w, x * scale, (x * scale) ** 2, 6), expected)


@pytest.mark.parametrize("k", [3, 17, 40])
def test_divide_and_conquer_is_optimal_on_rows_full_of_ties(k):
    """Many equal atoms make many equally good starts: bounding each search by the neighbours'
    optima and the previous layer's still finds a partition as good as the dense table's."""
    rng = np.random.default_rng(k)
    x = np.sort(rng.integers(-6, 7, (8, 300)).astype(np.float64), axis=1)
    w = rng.integers(0, 4, (8, 300)).astype(np.float64)
    results = _dense_and_divided(x, w, k)
    for row in range(8):
        dense, divided = (_sse(x[row], w[row], starts[row], skip_empty=True) for starts in results)
        assert divided <= dense * (1 + 1e-6) + 1e-12


def _brute_capped(x, w, k, longest, last):
    """The least SSE over partitions of atoms 0..last whose runs span at most ``longest`` atoms."""
    best = np.inf
    for cuts in itertools.combinations(range(1, last + 1), k - 1):
        bounds = (0, *cuts, last + 1)
        if max(b - a for a, b in zip(bounds, bounds[1:])) <= longest:
            best = min(best, _sse(x[: last + 1], w[: last + 1], (0, *cuts)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_longest_run_gives_the_best_partition_of_short_runs_up_to_the_last_atom(seed):
    """With ``longest_run`` no cluster spans more atoms than that, counted up to each row's last
    non-empty atom: the padding after it joins the last cluster whatever its length."""
    rng = np.random.default_rng(seed)
    size, k = 11, int(rng.integers(2, 5))
    longest = int(rng.integers(-(-size // k), size - k + 1))
    x = np.sort(rng.standard_t(2, (6, size)), axis=1)
    w = rng.integers(1, 4, (6, size)).astype(np.float64)
    w[1, 7:] = 0.0  # padded rows
    w[4, k + 1 :] = 0.0
    starts = optimal_partition(w, w * x, w * x * x, k, longest)
    for row in range(6):
        last = int(np.flatnonzero(w[row])[-1])
        bounds = [*starts[row], last + 1]
        assert starts[row][0] == 0 and all(0 < b - a <= longest for a, b in zip(bounds, bounds[1:]))
        got = _sse(x[row, : last + 1], w[row, : last + 1], starts[row])
        assert got <= _brute_capped(x[row], w[row], k, longest, last) * (1 + 1e-6) + 1e-12


def test_a_longest_run_covering_every_partition_changes_nothing():
    rng = np.random.default_rng(8)
    x = np.sort(rng.standard_normal((10, 64)), axis=1)
    w = np.ones_like(x)
    np.testing.assert_array_equal(optimal_partition(w, x, x * x, 16, 49), optimal_partition(w, x, x * x, 16))


@pytest.mark.parametrize("size,k,longest", [(64, 16, 3), (200, 4, 60)])
def test_longest_run_is_refused_where_it_cannot_apply(size, k, longest):
    """Too short to cover the row in k runs, or more atoms than the dense table takes."""
    x = np.sort(np.random.default_rng(9).standard_normal((2, size)), axis=1)
    with pytest.raises(ValueError, match="longest_run"):
        optimal_partition(np.ones_like(x), x, x * x, k, longest)
