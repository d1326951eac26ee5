"""Local search helpers: the row-by-row and vectorised searches count alike."""

from __future__ import annotations

import numpy as np
import pytest

from coreai_opt.coreai_utils._kernels import _local1d as local


@pytest.mark.parametrize("rows", [1, 8, 9, 32, 33, 64])
@pytest.mark.parametrize("points", [15, 63, 64, 255])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_search_sorted_counts_entries_at_or_below_each_point_on_every_path(rows, points, dtype):
    rng = np.random.default_rng(rows * 1000 + points)
    entries = np.sort(rng.standard_normal((rows + 3, 700)).round(2).astype(dtype), axis=1)
    listed = rng.permutation(rows + 3)[:rows]
    targets = np.sort(rng.standard_normal((rows, points)), axis=1)
    targets[:, ::5] = entries[listed, ::(700 // points) or 1][:, : targets[:, ::5].shape[1]]  # on entries
    expected = np.stack([np.searchsorted(entries[r].astype(np.float64), t, side="right")
                         for r, t in zip(listed, targets)])
    np.testing.assert_array_equal(local.search_sorted(entries, listed, targets), expected)
    for reach in (2, local._NEAR, 40, 700):  # guesses inside the window around them, at its edges, far off
        guess = np.clip(expected + rng.integers(-reach, reach + 1, expected.shape), 0, 700)
        np.testing.assert_array_equal(local.search_sorted(entries, listed, targets, guess), expected)
    np.testing.assert_array_equal(local.search_sorted(entries, listed, targets, np.zeros_like(expected)), expected)
    np.testing.assert_array_equal(local.search_sorted(entries, listed, targets, np.full_like(expected, 700)),
                                  expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_running_sums_give_every_sum_when_asked(dtype):
    rng = np.random.default_rng(4)
    n = 32 * 40 + 13  # not a multiple of the stride
    rows = np.sort((rng.standard_t(2, size=(3, n)) * 100).astype(dtype), axis=1)
    full, strided = local.histogram(rows, compress=False), local.histogram(rows, compress=False, sum_stride=32)
    assert strided.sums.shape == (3, n // 32 + 1) and full.sums.shape == (3, n + 1)
    at = np.arange(3 * (n + 1)).reshape(3, n + 1)  # every position of every row, the ends included
    np.testing.assert_allclose(strided.sums_at(at), full.sums.reshape(-1)[at], rtol=1e-12, atol=1e-9)
    # Run statistics (what the search asks for) agree as well.
    bounds = np.sort(rng.integers(0, n + 1, size=(3, 9)), axis=1)
    for got, expected in zip(local.run_stats(strided, np.arange(3), bounds, 0.0),
                             local.run_stats(full, np.arange(3), bounds, 0.0), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9)


def test_run_sums_add_each_run_in_float64_without_widening_the_whole_input(monkeypatch):
    import tracemalloc

    monkeypatch.setattr(local, "_WIDEN_BLOCK", 1000)  # runs cross many blocks
    rng = np.random.default_rng(3)
    flat = (rng.standard_normal(20_000) * 1e4).astype(np.float32)
    # Empty runs (equal starts) anywhere, on block edges, and at the very end.
    starts = np.sort(np.concatenate([[0, 0, 1000, 1000, 2999, 20_000, 20_000], rng.integers(0, 20_000, 40)]))
    ends = [*starts[1:], flat.size]
    expected = [flat[a:b].astype(np.float64).sum() for a, b in zip(starts, ends, strict=True)]
    np.testing.assert_allclose(local.run_sums(flat, starts), expected, rtol=1e-12, atol=1e-9)

    monkeypatch.setattr(local, "_WIDEN_BLOCK", 1 << 16)
    big = np.ones(1 << 22, np.float32)  # 16 MB; widened at once it would take 32 MB more
    tracemalloc.start()
    try:
        sums = local.run_sums(big, np.arange(0, big.size, 1 << 18))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sums.tolist() == [float(1 << 18)] * 16 and peak < 4 << 20


def _float64_running_sums(rows: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((rows.shape[0], 1)), np.cumsum(rows.astype(np.float64), axis=1)], axis=1)


@pytest.mark.parametrize("scale", [1e-40, 1e-30, 1e-3, 1.0, 1e30, 3e36])
def test_fixed_point_running_sums_match_float64_sums_at_any_magnitude(scale):
    """float32 rows are summed in int64 fixed point (rows of extreme magnitude the float64 way): within
    float64 summation's own rounding of the row's largest sum, whatever the scale."""
    rng = np.random.default_rng(5)
    rows = np.sort((np.clip(rng.standard_t(3, (7, 3001)), -40, 40) * scale).astype(np.float32), axis=1)
    rows[3] = 0.0  # a row of zeros
    rows[4, :10] = -np.float32(scale) * 90  # a heavy tail
    expected = _float64_running_sums(rows)
    got = local.histogram(rows, compress=False).sums
    assert got.shape == expected.shape and (got[:, 0] == 0).all()
    largest = np.abs(rows).max(axis=1, keepdims=True).astype(np.float64)
    peak = np.abs(expected).max(axis=1, keepdims=True) + largest * rows.shape[1]
    assert (np.abs(got - expected) <= peak * 2.0**-40).all()


def test_fixed_point_running_sums_carry_across_blocks_and_batches(monkeypatch):
    """Long rows are summed a block at a time, short ones a few rows at a time: the same sums."""
    rng = np.random.default_rng(6)
    rows = np.sort(rng.standard_normal((5, 2500)).astype(np.float32), axis=1)
    whole = local.histogram(rows, compress=False).sums
    monkeypatch.setattr(local, "_WIDEN_BLOCK", 1000)  # blocks of 1,000 values, one row per batch
    np.testing.assert_array_equal(local.histogram(rows, compress=False).sums, whole)
    np.testing.assert_allclose(whole, _float64_running_sums(rows), rtol=0, atol=1e-9)


def test_float64_rows_keep_float64_running_sums():
    rows = np.sort(np.random.default_rng(7).standard_normal((3, 500)) * 1e-300, axis=1)
    np.testing.assert_array_equal(local.histogram(rows, compress=False).sums, _float64_running_sums(rows))
