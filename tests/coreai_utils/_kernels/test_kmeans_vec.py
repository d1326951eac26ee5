"""Vector palettization kernel: exact nearest assignment, determinism, robustness, quality."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coreai_opt.coreai_utils._kernels import kmeans_vec
from coreai_opt.coreai_utils._kernels.kmeans_vec import palettize_vectors


def _distances(x, lut):
    """float64 squared distances (n, k), summed over coordinates in order (the kernel's definition)."""
    x = x.astype(np.float64)
    acc = np.zeros((len(x), len(lut)))
    for i in range(x.shape[1]):
        acc += np.square(x[:, i, None] - lut[None, :, i])
    return acc


def _sse(points, lut, indices):
    return float(sum(_distances(p, l)[np.arange(len(p)), i].sum() for p, l, i in zip(points, lut, indices)))


def _check(points, k, lut, indices):
    """Shapes, finiteness and the exact nearest property (ties to the lower index)."""
    G, n, d = points.shape
    assert lut.shape == (G, k, d) and lut.dtype == np.float64 and np.isfinite(lut).all()
    assert indices.shape == (G, n) and indices.dtype == np.uint8 and (indices < k).all()
    for g in range(G):
        dist = _distances(points[g], lut[g])
        np.testing.assert_array_equal(indices[g], dist.argmin(axis=1))


def _weights(rng, n, d, scale=0.04, outliers=1e-4):
    """Normal weights with a few 10x outliers, as vectors of d consecutive values."""
    w = (rng.standard_normal(n * d) * scale).astype(np.float32)
    hit = rng.random(w.shape) < outliers
    w[hit] *= 10
    return w.reshape(n, d)


@pytest.mark.parametrize("n", [1, 7, 300, 4096, 20000])
@pytest.mark.parametrize("d, k", [(2, 2), (2, 16), (2, 256), (3, 16), (4, 16), (8, 4)])
def test_nearest_entry_for_every_path(n, d, k):
    rng = np.random.default_rng(n * 31 + d * 7 + k)
    points = np.stack([_weights(rng, n, d) for _ in range(2)])
    lut, indices = palettize_vectors(points, k)
    _check(points, k, lut, indices)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_input_dtypes(dtype):
    points = _weights(np.random.default_rng(0), 9000, 2)[None].astype(dtype)
    lut, indices = palettize_vectors(points, 16)
    _check(points, 16, lut, indices)


def test_same_input_gives_bit_identical_output():
    points = np.stack([_weights(np.random.default_rng(g), 12000, 2) for g in range(2)])
    a = palettize_vectors(points, 16, seed=3)
    b = palettize_vectors(points.copy(), 16, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("d, n", [(2, 3000), (2, 30000), (4, 30000)])
def test_a_group_does_not_depend_on_the_batch_or_the_chunking(monkeypatch, d, n):
    points = np.stack([_weights(np.random.default_rng(g), n, d) for g in range(3)])
    lut, indices = palettize_vectors(points, 16)
    alone = palettize_vectors(points[1:2], 16)
    np.testing.assert_array_equal(lut[1], alone[0][0])
    np.testing.assert_array_equal(indices[1], alone[1][0])
    monkeypatch.setattr(kmeans_vec, "_BLOCK", 1 << 11)
    chunked = palettize_vectors(points, 16)
    np.testing.assert_array_equal(lut, chunked[0])
    np.testing.assert_array_equal(indices, chunked[1])


@pytest.mark.parametrize("d, k", [(2, 16), (2, 64), (4, 16)])
def test_groups_cut_into_many_point_chunks_still_get_the_nearest_entries(monkeypatch, d, k):
    """Whole-group passes (normalising, gridding, refining, assigning) run ``_CHUNK`` points at a
    time; with chunks far smaller than the group the result is still exact and as good."""
    points = _weights(np.random.default_rng(d + k), 40000, d)[None]
    whole = palettize_vectors(points, k)
    monkeypatch.setattr(kmeans_vec, "_CHUNK", 3001)
    lut, indices = palettize_vectors(points, k)
    _check(points, k, lut, indices)
    assert _sse(points, lut, indices) <= _sse(points, *whole) * (1 + 1e-6)


def test_a_large_group_needs_little_memory_besides_its_rows():
    """Whole-group temporaries were several times the input (the MiniLM embedding at cluster_dim 2:
    280 MB for 47 MB), and first touches of fresh memory cost more than the clustering on the
    project's machine. Now: the float32 rows [y; 1; |y|^2] (16 bytes a point), the cell of each point
    (6), the points left to each pass (at most 8) and small chunks; before, 3x the rows."""
    import tracemalloc

    n, d = 1_500_000, 2
    points = _weights(np.random.default_rng(5), n, d)[None]
    tracemalloc.start()
    try:
        palettize_vectors(points, 16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rows = (d + 2) * n * 4
    assert peak < 2 * rows, (peak, rows)


def test_each_lloyd_run_stops_on_its_own_as_if_alone():
    rng = np.random.default_rng(4)
    P = rng.standard_normal((2000, 2)) * [1.0, 0.3]
    w = rng.uniform(0.5, 2.0, len(P))
    Y = kmeans_vec._aug(P)
    starts = np.stack([P[rng.choice(len(P), 16, replace=False)] for _ in range(4)])
    C, sse, D = kmeans_vec._lloyd(P, w, Y, starts, 100)
    for r in range(4):
        alone = kmeans_vec._lloyd(P, w, Y, starts[r : r + 1], 100)
        np.testing.assert_array_equal(C[r], alone[0][0])
        np.testing.assert_array_equal(D[r], alone[2][0])
        assert sse[r] == pytest.approx(alone[1][0], rel=1e-12)
    # The runs stopped by the tolerance, not by the iteration limit.
    np.testing.assert_array_equal(C, kmeans_vec._lloyd(P, w, Y, starts, 1000)[0])


def test_blas_threads_do_not_change_the_result():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    points = np.stack([_weights(np.random.default_rng(5), 40000, 2), _weights(np.random.default_rng(6), 40000, 2)])
    with threadpoolctl.threadpool_limits(1):
        one = palettize_vectors(points, 16)
    with threadpoolctl.threadpool_limits(2):
        two = palettize_vectors(points, 16)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


@pytest.mark.parametrize("n", [50, 20000])
def test_few_distinct_vectors_get_their_own_entries(n):
    rng = np.random.default_rng(1)
    values = rng.standard_normal((5, 2)).astype(np.float32)
    points = values[rng.integers(0, 5, n)][None]
    points[0, :5] = values  # every value occurs
    lut, indices = palettize_vectors(points, 16)
    _check(points, 16, lut, indices)
    assert _sse(points, lut, indices) == 0.0
    assert {tuple(v) for v in lut[0]} == {tuple(v) for v in values.astype(np.float64)}


@pytest.mark.parametrize("n", [100, 20000])
@pytest.mark.parametrize("value", [0.0, -3.5, 1e30, float(np.finfo(np.float32).max), 1e-45])
def test_all_equal(n, value):
    points = np.full((1, n, 2), value, np.float32)
    lut, indices = palettize_vectors(points, 16)
    _check(points, 16, lut, indices)
    assert (lut == points[0, 0].astype(np.float64)).all() and (indices == 0).all()


@pytest.mark.parametrize(
    "scale, dtype",
    [(1e30, np.float32), (1e38, np.float32), (1e-42, np.float32), (1e-3, np.float16), (1e140, np.float64)],
)
@pytest.mark.parametrize("n", [500, 30000])
def test_extreme_magnitudes(scale, dtype, n):
    rng = np.random.default_rng(2)
    raw = rng.standard_normal((1, n, 2)) * scale
    limit = np.finfo(dtype).max
    points = np.clip(raw, -limit, limit).astype(dtype)
    lut, indices = palettize_vectors(points, 16)
    _check(points, 16, lut, indices)
    # Not degenerate: the spread is used, as at any other scale.
    assert _sse(points, lut, indices) < 0.2 * _sse(points, points.astype(np.float64).mean(1, keepdims=True).repeat(16, 1), np.zeros((1, n), np.uint8))


def test_float32_max_with_both_signs():
    top = np.finfo(np.float32).max
    points = np.array([[[top, -top], [-top, top], [top, top], [0, 0], [1, 1]]], np.float32).repeat(2000, axis=1)
    lut, indices = palettize_vectors(points, 8)
    _check(points, 8, lut, indices)
    assert _sse(points, lut, indices) == 0.0


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_float64_beyond_2_to_500_uses_power_of_two_scaled_distances(scale):
    points = np.random.default_rng(7).standard_normal((1, 20000, 2)) * scale
    lut, indices = palettize_vectors(points, 16)
    e = int(np.frexp(np.abs(points).max())[1])
    _check(np.ldexp(points, -e), 16, np.ldexp(lut, -e), indices)  # scaling by 2^-e is exact


def test_to_storage_and_round_decimals():
    points = _weights(np.random.default_rng(3), 20000, 2)[None]

    def to_half(c):
        return c.astype(np.float16).astype(np.float64)

    lut, indices = palettize_vectors(points, 16, to_storage=to_half)
    _check(points, 16, lut, indices)
    np.testing.assert_array_equal(lut, to_half(lut))
    plain = palettize_vectors(points, 16)
    assert _sse(points, lut, indices) <= 1.01 * _sse(points, *plain)
    for d, n in [(2, 3000), (4, 20000)]:
        pts = _weights(np.random.default_rng(4), n, d)[None]
        fast = palettize_vectors(pts, 16, round_decimals=2)
        _check(pts, 16, *fast)
        assert _sse(pts, *fast) <= 1.05 * _sse(pts, *palettize_vectors(pts, 16))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        palettize_vectors(np.zeros((4, 2), np.float32), 16)
    with pytest.raises(ValueError):
        palettize_vectors(np.zeros((1, 4, 2), np.float32), 257)
    with pytest.raises(ValueError):
        palettize_vectors(np.zeros((1, 4, 2), np.int32), 4)
    with pytest.raises(ValueError):
        palettize_vectors(np.ones((1, 40, 2), np.float32), 4, to_storage=lambda c: c * np.inf)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=2, max_size=64),
    d=st.integers(1, 8),
    k=st.sampled_from([2, 3, 16, 256]),
    repeat=st.integers(1, 200),
)
def test_property_arbitrary_float32_values(values, d, k, repeat):
    flat = np.array(values, np.float32)
    flat = np.resize(flat, (len(flat) * repeat // d + 1) * d)  # many duplicates
    points = flat.reshape(1, -1, d)
    lut, indices = palettize_vectors(points, k)
    _check(points, k, lut, indices)
    if len(np.unique(points[0], axis=0)) <= k:
        assert _sse(points, lut, indices) == 0.0


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 9000),
    d=st.sampled_from([1, 2, 4, 8]),
    k=st.sampled_from([2, 16, 256]),
    exponent=st.sampled_from([-44, -20, 0, 20, 37]),
    distinct=st.sampled_from([1, 3, 40, None]),
)
def test_property_scales_and_duplicates(seed, n, d, k, exponent, distinct):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n if distinct is None else distinct, d)) * 10.0**exponent
    rows = rng.integers(0, len(base), n)
    points = np.clip(base[rows], -3e38, 3e38).astype(np.float32)[None]
    lut, indices = palettize_vectors(points, k, seed=seed % 7)
    _check(points, k, lut, indices)
    if len(np.unique(points[0], axis=0)) <= k:
        assert _sse(points, lut, indices) == 0.0


def _sklearn_sse(points, k):
    cluster = pytest.importorskip("sklearn.cluster")
    x = points.astype(np.float64)
    model = cluster.KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=0).fit(x)
    return float(np.square(x - model.cluster_centers_[model.labels_]).sum())


def _minilm_like_groups(d, count, size=50000):
    """Subsampled groups of synthetic MiniLM-shaped weights: vectors of d consecutive output channels."""
    rng = np.random.default_rng(d)
    groups = []
    for _ in range(count):
        weight = _weights(rng, 384 * 1536 // d, d).reshape(-1)
        out, cols = 1536, 384
        vectors = weight.reshape(out // d, d, cols).transpose(0, 2, 1).reshape(-1, d)
        groups.append(vectors[np.sort(rng.choice(len(vectors), size, replace=False))])
    return np.stack(groups)


@pytest.mark.slow
@pytest.mark.parametrize("d, k, per_group, mean", [(2, 16, 1.005, 1.0), (4, 16, 1.012, 1.0), (2, 256, 1.06, 1.05)])
def test_sse_against_scikit_learn(d, k, per_group, mean):
    """sklearn's single k-means++ run lands in a Lloyd local optimum whose SSE varies by about +-1%
    with the seed, and is sometimes the best of 20 seeds: a strict per-group <= cannot be promised.
    The kernel must win on average for k = 16 and stay within a small margin per group; k = 256
    (coreset of 16 cells per cluster, 1-3 polish steps) is a few percent behind."""
    points = _minilm_like_groups(d, 6 if k == 16 else 2)
    lut, indices = palettize_vectors(points, k)
    ratios = [_sse(p[None], l[None], i[None]) / _sklearn_sse(p, k) for p, l, i in zip(points, lut, indices)]
    assert max(ratios) <= per_group, ratios
    assert np.mean(ratios) <= mean, ratios


@pytest.mark.parametrize("d", [1, 2])
def test_groups_with_few_distinct_vectors_the_sample_missed_are_still_exact(d):
    """A group of more than 4,096 points whose sample misses some of its at most k distinct vectors
    (rare ones; subnormal values, whose squared distances underflow, cannot be clustered apart)
    takes all its distinct vectors (hypothesis found it: 4,097 values near 1e-44, k = 256)."""
    rng = np.random.default_rng(0)
    base = np.unique((rng.standard_normal((150, d)) * 1e-44).astype(np.float32), axis=0)
    common, rare = base[:-20], base[-20:]  # each rare vector once: a sample of 2,048 misses some
    points = np.concatenate([common[rng.integers(0, len(common), 4097 - len(rare))], rare])[None]
    assert len(np.unique(points[0], axis=0)) == len(base) <= 256
    lut, indices = palettize_vectors(points, 256)
    _check(points, 256, lut, indices)
    assert _sse(points, lut, indices) == 0.0
