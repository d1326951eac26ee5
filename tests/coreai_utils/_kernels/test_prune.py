"""Pruning masks prune exactly what they promise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coreai_opt.coreai_utils._kernels import prune
from coreai_opt.coreai_utils._kernels.prune import (block_mask, kth_smallest, magnitude_mask, n_m_mask,
                                                  prune_count)


@pytest.mark.parametrize("size,sparsity,count", [(100, 0.29, 29), (10, 0.3, 3), (7, 0.5, 3), (10, 1.0, 10),
                                                 (10, 0.0, 0), (3, 0.999, 2)])
def test_prune_count_is_the_floor_of_the_decimal_product(size, sparsity, count):
    assert prune_count(size, sparsity) == count


@settings(max_examples=150, deadline=None)
@given(shape=st.tuples(st.integers(1, 12), st.integers(1, 12)), sparsity=st.floats(0, 1),
       distinct=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_magnitude_prunes_exactly_the_requested_count_even_with_ties(shape, sparsity, distinct, seed):
    rng = np.random.default_rng(seed)
    weight = rng.integers(-distinct, distinct + 1, shape).astype(np.float32)
    keep = magnitude_mask(weight, sparsity)
    pruned = ~keep
    assert int(pruned.sum()) == prune_count(weight.size, sparsity)
    if pruned.any() and keep.any():
        assert np.abs(weight[pruned]).max() <= np.abs(weight[keep]).min()


def _large_arrays():
    """Arrays past the bracketing size: smooth, few distinct values, sorted, and periodic with the sample's
    stride (every sampled value the same: the bracket is empty and the whole array is partitioned)."""
    rng = np.random.default_rng(3)
    size = prune._BRACKET_MIN + 12_345
    stride = size // prune._BRACKET_SAMPLE
    periodic = np.tile(np.arange(stride, dtype=np.float32), size // stride + 1)[:size]
    return {"normal": rng.standard_normal(size).astype(np.float32),
            "few": rng.integers(0, 3, size).astype(np.float64),
            "sorted": np.sort(rng.random(size)),
            "periodic": periodic}


@pytest.mark.parametrize("name", ["normal", "few", "sorted", "periodic"])
def test_kth_smallest_is_the_partition_value_on_large_arrays(name, monkeypatch):
    values = _large_arrays()[name]
    chosen = [0, 1, values.size // 3, values.size // 2, values.size - 2, values.size - 1]
    partitioned = np.partition(values, chosen)
    calls = []
    real = np.partition
    monkeypatch.setattr(prune.np, "partition", lambda a, k: calls.append(a.size) or real(a, k))
    for k in chosen:
        assert kth_smallest(values, k) == partitioned[k]
    if name == "periodic":  # the bracket missed: whole-array selections
        assert values.size in calls
    else:  # the bracket held: only candidates were partitioned
        assert calls and max(calls) < values.size


def test_ties_prune_the_lower_flat_index_first():
    keep = magnitude_mask(np.ones((2, 3), np.float32), 0.5)
    np.testing.assert_array_equal(keep.reshape(-1), [False, False, False, True, True, True])


def test_blocks_are_pruned_whole_and_ranked_by_norm():
    weight = np.ones((8, 3), np.float32)
    weight[4:8, 1] = 0.1  # the weakest block: channels 4..7 at position 1
    keep = block_mask(weight, 4, 0.17)  # 6 blocks, prune floor(1.02) = 1
    assert (~keep).sum() == 4 and not keep[4:8, 1].any()


def test_a_trailing_partial_block_is_ranked_by_its_rms():
    weight = np.ones((5, 1), np.float32)  # blocks: rows 0-3 and row 4
    weight[4, 0] = 0.9  # a short block of large values must not lose just for being short
    weight[0:4, 0] = 0.5
    keep = block_mask(weight, 4, 0.5)
    assert not keep[0:4, 0].any() and keep[4, 0]


@settings(max_examples=100, deadline=None)
@given(rows=st.integers(1, 6), length=st.integers(1, 23), m=st.integers(1, 6), data=st.data())
def test_n_m_zeroes_n_of_every_m_and_keeps_the_ratio_in_the_tail(rows, length, m, data):
    n = data.draw(st.integers(0, m))
    weight = np.random.default_rng(length * 7 + m).standard_normal((rows, length)).astype(np.float32)
    keep = n_m_mask(weight, n, m)
    full, tail = divmod(length, m)
    groups = keep[:, : full * m].reshape(rows, full, m)
    assert (groups.sum(axis=-1) == m - n).all()
    if tail:
        assert ((~keep[:, full * m :]).sum(axis=-1) == (n * tail) // m).all()
    for r in range(rows):
        for g in range(full):
            part = np.abs(weight[r, g * m : (g + 1) * m])
            kept = keep[r, g * m : (g + 1) * m]
            if (~kept).any() and kept.any():
                assert part[~kept].max() <= part[kept].min()
