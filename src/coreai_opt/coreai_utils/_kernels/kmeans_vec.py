"""Vector palettization: k-means of short weight vectors into a per-group LUT.

Each group holds ``n`` vectors of ``d`` values and gets its own LUT of ``k``
vectors; every vector is replaced by the index of its nearest LUT entry.

1. **Frame.**  Values are normalised (``y = (x - mean) / max|x - mean|``) so
   float work happens at scale 1 for any magnitude (1e30, float32 max,
   subnormals).  ``Y`` holds float32 rows ``[y; 1; |y|^2]``: one BLAS product
   with rows ``[-2c; |c|^2 + off; 1]`` gives all squared distances to c.
2. **Few distinct vectors** (at most k): each gets its own entry.
3. **Coreset** of weighted distinct vectors: all distinct (optionally
   rounded) vectors of small groups; for ``d <= 2`` a quantile grid whose
   cells carry count and coordinate sums, the ``_TAIL`` largest-norm vectors
   kept single ("loose"); otherwise a norm-weighted deduplicated sample.
4. **Clustering**: a batch of greedy k-means++ seedings with weighted Lloyd,
   the lowest SSE kept, then rounds of random swaps (a centroid moved to a
   D^2-sampled point, a few Lloyd steps, more for the trials still close to
   the best SSE, kept if the SSE drops).
5. **Polish on the exact points**: grid cells inside one Voronoi region
   (with a margin) act as one weighted point, other points count singly;
   without a grid, Lloyd steps over all points.  Steps through
   ``to_storage`` are kept only if they lower the SSE.
6. **Exact assignment**: a grid cell with one candidate entry (the only one
   that can be nearest in its box) is assigned whole; a few candidates are
   compared in float64; other points get float32 scores whose int32 keys
   carry the column in their low bits (one ``min`` gives value and argmin),
   and points whose runner-up is within a rounding-error bound are decided
   with float64 distances ``sum_i (x_i - lut_i)**2``.  Result: the exact
   float64 nearest entry, ties to the lower index.

Each group draws from ``default_rng([seed, n, d, k])``: its result does not
depend on the other groups, on ``G``, on chunk sizes or on BLAS threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_EPS32 = 2.0**-24  # unit roundoff of float32
_BLOCK = 1 << 18  # float32 scores (centroids x points) per chunk
_SMALL = 4096  # groups up to this size cluster all their distinct vectors
_TAIL = 256  # loose tail vectors of a grid
_GRID_DIMS, _SAMPLE = 2, 4096  # grid coreset up to this d, else a sample
_LLOYD_ITERS, _TOL = 100, 1e-3  # coreset Lloyd: stop when < _TOL of weight moves
_SWAP_ITERS = 10
#: Swap trials get this many Lloyd steps first; only those within this fraction of the current
#: SSE get the rest (cluster_dim 2 on MiniLM: 12 % less time, the same SSE; continuing only the
#: best trial saved 15 % for 0.05 % more SSE).
_SCREEN_ITERS, _SCREEN_MARGIN = 3, 0.02
_POLISH_ITERS, _POLISH_POINTS, _POLISH_WORK, _MARGIN = 20, 1 << 15, 1 << 25, 0.5
_SAMPLE_STEPS, _STEP_WORK = 10, 1 << 26  # exact Lloyd steps after a sampled coreset
_CANDIDATES = 8  # most candidate entries decided by direct float64 distances
_CHUNK = 1 << 16  # points per chunk of whole-group passes (their temporaries stay small)


def _effort(k):
    """(grid cells, k-means++ restarts, swap rounds, swap trials per round)."""
    if k <= 32:
        return 2048, 4, 4, 8
    return (2048, 2, 2, 4) if k <= 64 else (4096, 1, 0, 0)


def palettize_vectors(
    points: np.ndarray,
    k: int,
    *,
    round_decimals: int | None = None,
    to_storage: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster each group of ``points`` (G, n, d) into ``k`` LUT vectors.

    Returns ``(lut, indices)``: ``lut`` (G, k, d) float64 holds
    ``to_storage(centroids)``; ``indices`` (G, n) uint8 the nearest LUT entry
    of every exact input vector (squared Euclidean, ties to the lower index).
    ``round_decimals`` rounds (in float64) the vectors that are deduplicated
    for clustering (small groups and sampled coresets; a grid coreset is a
    quantisation already); the assignment always uses the exact values.
    """
    points = np.asarray(points)
    if points.ndim != 3 or points.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError("points must be a (G, n, d) float16/32/64 array")
    if not 2 <= k <= 256:
        raise ValueError(f"k must be in [2, 256], got {k}")
    G, n, d = points.shape
    lut = np.zeros((G, k, d))
    indices = np.zeros((G, n), np.uint8)
    for g in range(G):
        if n and d:
            x = np.ascontiguousarray(points[g])
            lut[g], indices[g] = _palettize_group(x, k, round_decimals, to_storage, seed)
    return lut, indices


def _palettize_group(x, k, round_decimals, to_storage, seed):
    n, d = x.shape
    rng = np.random.default_rng([seed, n, d, k])
    frame = _Frame(x)
    grid = _Grid(frame, k, rng)
    few = _distinct(frame, grid, k, rng, to_storage)
    if few is not None:
        return few
    P, w = _coreset(frame, grid, round_decimals, rng)
    z = P[np.arange(k) % len(P)] if len(P) <= k else _cluster(P, w, k, rng)
    if grid.pos is not None:
        z = _polish(frame, grid, z, rng)
        steps = int(to_storage is not None)
    elif n > _SMALL:
        steps = int(np.clip(_STEP_WORK // (n * k), 1, _SAMPLE_STEPS))
    else:
        steps = int(to_storage is not None or round_decimals is not None)
    lut = _refine(frame, grid, z, to_storage, steps)
    return lut, _assign(frame, grid, lut)


def _distinct(frame, grid, k, rng, to_storage):
    """(lut, indices) when the group has at most k distinct vectors: each
    its own entry, repeated to fill the LUT.  Else None.  A sample of large
    groups proposes the vectors; all points are checked, and where the sample
    missed some, all points propose them (a sample of at most k distinct
    vectors is rare unless the group has few)."""
    x, n = frame.x, frame.x.shape[0]
    proposers = [slice(None)] if n <= _SMALL else [rng.integers(0, n, max(64, 8 * k)), slice(None)]
    for rows in proposers:
        v = np.unique(x[rows].astype(np.float64) + 0.0, axis=0)
        if len(v) > k:
            return None
        lut = v[np.arange(k) % len(v)]
        indices = _assign(frame, grid, lut)
        if n <= _SMALL or np.array_equal(lut[indices], x):
            break
    else:
        return None
    if to_storage is None:
        return lut, indices
    lut = _stored(to_storage, None, lut)
    return lut, _assign(frame, grid, lut)


class _Frame:
    """One group: raw vectors, normalisation and float32 rows ``[y; 1; |y|^2]``."""

    def __init__(self, x):
        self.x, (n, d) = x, x.shape
        flat = x.reshape(-1)
        lo, hi = float(flat.min()), float(flat.max())
        # float64 inputs beyond 2^+-500 are scaled by an exact power of two
        # before differences are squared; otherwise distances are raw.
        amax, self.exp = max(-lo, hi), 0
        if x.dtype == np.float64 and amax > 0 and not 2.0**-500 < amax < 2.0**500:
            self.exp = int(np.frexp(amax)[1])
            flat, lo, hi = np.ldexp(flat, -self.exp), *np.ldexp([lo, hi], -self.exp)
        mu = float(np.mean(flat, dtype=np.float64))
        s = max(hi - mu, mu - lo)
        self.mu, self.s = mu, (s if s > 0 else 1.0)
        # float32 normalisation is accurate to 6 eps (at scale 1) when the
        # mean and the values are moderate; otherwise normalise in float64.
        fast = abs(mu) <= self.s and 2.0**-60 < amax < 2.0**60
        wt = np.float32 if fast else np.float64
        self.y_err = (8.0 if fast else 1.0) * _EPS32  # with a safety margin
        self.Y = Y = np.empty((d + 2, n), np.float32)
        for a in range(d):  # one coordinate at a time: no normalised copy of the whole group
            y = Y[a] if fast else np.empty(n)
            np.subtract(flat[a::d], wt(mu), out=y, dtype=wt)
            np.multiply(y, wt(1.0 / self.s), out=y)
            if not fast:
                Y[a] = y
        np.multiply(Y[0], Y[0], out=Y[d + 1])
        for a in range(1, d):  # the row of ones, filled last, holds each square meanwhile
            Y[d + 1] += np.multiply(Y[a], Y[a], out=Y[d])
        Y[d] = 1.0
        self.sum_sq = float(Y[d + 1].sum(dtype=np.float64))

    def normalize(self, v):
        return (np.ldexp(v, -self.exp) - self.mu) / self.s

    def denormalize(self, z):
        return np.ldexp(z * self.s + self.mu, self.exp)


class _Grid:
    """Quantile grid over the normalised vectors (``d <= _GRID_DIMS``, n > _SMALL).

    Nonempty cell ``c`` has ``count[c]``, coordinate sums ``sums[c]`` and an
    axis-aligned box (bin ``coords[c]`` of each axis) holding its points;
    ``pos[i]`` is the cell of point i, or ``C = len(count)`` for the tail
    (largest norms), which is loose: always handled point by point.  Without
    a grid (``pos is None``) every point is loose.
    """

    def __init__(self, frame, k, rng):
        Y, (n, d) = frame.Y, frame.x.shape
        self.pos = None
        if d > _GRID_DIMS or n <= _SMALL:
            return
        sample = rng.integers(0, n, 16384)
        thr = float(np.quantile(Y[d + 1, sample], 1.0 - min(_TAIL / n, 0.5)))
        bins = max(2, int(min(_effort(k)[0], n // 8) ** (1.0 / d) + 1e-9))
        fine = 16 * bins  # uniform fine bins over [-r, r], mapped to quantile bins
        r = np.sqrt(thr) * (1 + 1e-6) + 1e-30
        self.width = width = 2 * r / fine
        keep = sample[Y[d + 1, sample] <= thr]
        self.lo, self.hi, to_bins = [], [], []
        for a in range(d):
            edges = np.quantile(Y[a, keep], np.linspace(0, 1, bins + 1)[1:-1])
            cut = np.clip(np.ceil((edges + r) / width), 0, fine).astype(np.int32)
            to_bins.append(np.searchsorted(cut, np.arange(fine), side="right").astype(np.int32))
            # Boxes widened by one fine bin plus the error of y cover
            # rounding in the binning and in the normalisation.
            pad = width + 2 * frame.y_err
            self.lo.append(-r + np.concatenate([[0], cut]) * width - pad)
            self.hi.append(-r + np.concatenate([cut, [fine]]) * width + pad)
        cell = np.empty(n, np.int32)
        counts = np.zeros(bins**d + 1, np.int64)
        for part in _chunks(n):  # chunks of points: small temporaries
            acc = 0
            for a, to_bin in enumerate(to_bins):
                f = np.multiply(Y[a, part], np.float32(1 / width))
                fi = np.add(f, np.float32(r / width), out=f).astype(np.int32)
                acc = acc * bins + to_bin[np.clip(fi, 0, fine - 1, out=fi)]
            acc[Y[d + 1, part] > thr] = bins**d
            cell[part] = acc
            counts += np.bincount(acc, minlength=bins**d + 1)
        nz = np.flatnonzero(counts[:-1])
        to_pos = np.full(bins**d + 1, len(nz), np.uint16)
        to_pos[nz] = np.arange(len(nz))
        self.pos = to_pos[cell]
        del cell
        self.count = counts[nz].astype(np.float64)
        sums = np.zeros((d, len(nz) + 1))
        for part in _chunks(n):
            for a in range(d):
                sums[a] += np.bincount(self.pos[part], Y[a, part], len(nz) + 1)
        self.sums = sums[:, :-1].T.copy()
        self.coords = np.stack(np.unravel_index(nz, (bins,) * d), 1)
        self.margin = 1e-12 * (1 + abs(frame.mu) / frame.s)

    def candidates(self, z, delta=0.0):
        """Per cell: mask (C, k) of the centroids that can be nearest somewhere
        in its box, even after every centroid moves by ``delta``."""
        near = far = 0.0
        for a, (lo, hi) in enumerate(zip(self.lo, self.hi)):
            lo, hi, za = lo[:, None], hi[:, None], z[:, a]
            near = near + (np.maximum(np.maximum(lo - za, za - hi), 0.0) ** 2)[self.coords[:, a]]
            far = far + (np.maximum(za - lo, hi - za) ** 2)[self.coords[:, a]]
        bound = (np.sqrt(far.min(1, keepdims=True)) + 2 * delta) ** 2 * (1 + 1e-9)
        return near <= bound + self.margin

    def split(self, z, delta=0.0):
        """(label of each cell with a single candidate else -1, indices of
        the points outside such cells)."""
        cand = self.candidates(z, delta)
        labels = np.where(cand.sum(1) == 1, cand.argmax(1), -1)
        return labels, np.flatnonzero(np.append(labels < 0, True)[self.pos])


def _chunks(n):
    """Slices of ``_CHUNK`` points covering ``range(n)``."""
    return [slice(c, c + _CHUNK) for c in range(0, n, _CHUNK)]


def _point_columns(Y, points):
    """Columns of ``Y`` of the listed points (all if None), ``_CHUNK`` points at a time."""
    n = Y.shape[1] if points is None else len(points)
    for part in _chunks(n):
        yield Y[:, part] if points is None else Y[:, points[part]]


def _coreset(frame, grid, round_decimals, rng):
    """Weighted distinct vectors to cluster, normalised: (P (m, d), w (m,))."""
    x, (n, d), Y = frame.x, frame.x.shape, frame.Y
    if grid.pos is not None:
        loose = np.flatnonzero(grid.pos == len(grid.count))
        P = np.concatenate([grid.sums / grid.count[:, None], Y[:d, loose].T])
        return P, np.concatenate([grid.count, np.ones(len(loose))])
    if n <= _SMALL:
        rows, w = np.arange(n), np.ones(n)
    else:  # sample with probability ~ 1/n + |y|^2 / sum |y|^2, weight 1/p
        p = 0.5 / n + 0.5 * Y[d + 1].astype(np.float64) / max(frame.sum_sq, 1e-300)
        cum = np.cumsum(p)
        rows = np.searchsorted(cum, rng.random(_SAMPLE) * cum[-1], side="right")
        rows = np.minimum(rows, n - 1)
        w = 1.0 / p[rows]
    v = x[rows].astype(np.float64) + 0.0  # +0.0 folds -0.0 into 0.0
    if round_decimals is not None:
        v = np.round(v, round_decimals) + 0.0
    v, inverse = np.unique(v, axis=0, return_inverse=True)
    return frame.normalize(v), np.bincount(inverse.reshape(-1), w, len(v))


def _aug(P):
    """float32 rows ``[P.T; 1; |P|^2]`` of normalised points P (m, d)."""
    Y = np.empty((P.shape[1] + 2, len(P)), np.float32)
    Y[:-2], Y[-2], Y[-1] = P.T, 1.0, (P * P).sum(1)
    return Y


def _score_rows(z, off):
    """float32 rows ``[-2z; |z|^2 + off; 1]``: ``W @ Y`` = ``|y - z|^2 + off``."""
    W = np.empty((len(z), z.shape[1] + 2), np.float32)
    W[:, :-2] = -2.0 * z
    W[:, -2] = (z * z).sum(1) + off
    W[:, -1] = 1.0
    return W


def _min_keys(W, Yc, k):
    """Integer keys of the scores ``W @ Yc`` and their minimum per k rows.

    Scores are non-negative, so their int32 views order like the floats; the
    low ``bits`` carry the row index.  Returns keys (R, k, c) and kmin (R, c).
    """
    bits = max(1, (k - 1).bit_length())
    K = (W @ Yc).view(np.int32).reshape(-1, k, Yc.shape[1])
    K &= np.int32(-(1 << bits))
    K |= np.arange(k, dtype=np.int32)[:, None]
    return K, K.min(axis=1)


def _nearest_approx(Y, z, k):
    """float32 argmin labels (R, n) for R runs of k centroid rows ``z``."""
    W = _score_rows(z, 1e-3)  # the offset keeps rounding-level scores positive
    n, step = Y.shape[1], max(256, _BLOCK // len(W))
    mask = (1 << max(1, (k - 1).bit_length())) - 1
    if n <= step:
        return _min_keys(W, Y, k)[1] & mask
    step = -(-n // -(-n // step))  # chunks of equal size
    labels = np.empty((len(W) // k, n), np.int32)
    for a in range(0, n, step):
        labels[:, a : a + step] = _min_keys(W, Y[:, a : a + step], k)[1] & mask
    return labels


def _cluster(P, w, k, rng):
    """k-means++ restarts with Lloyd, then random-swap rounds, on (P, w)."""
    _, restarts, rounds, trials = _effort(k)
    Y, m = _aug(P), len(P)
    C, sse, D = _lloyd(P, w, Y, _kmeanspp(P, w, k, rng, restarts), _LLOYD_ITERS)
    best = int(np.argmin(sse))
    C, sse, D = C[best], sse[best], D[best]
    rows = np.arange(trials)
    for _ in range(rounds):
        trial = np.repeat(C[None], trials, axis=0)
        cum = np.cumsum(w * D)
        new = np.searchsorted(cum, rng.random(trials) * cum[-1], side="right")
        trial[rows, rng.integers(0, k, trials)] = P[np.minimum(new, m - 1)]
        Ct, st, _ = _lloyd(P, w, Y, trial, _SCREEN_ITERS)
        close = np.flatnonzero(st < sse * (1 + _SCREEN_MARGIN))  # the trials that may still win
        if not len(close):
            continue
        Ct, st, Dt = _lloyd(P, w, Y, Ct[close], _SWAP_ITERS - _SCREEN_ITERS)
        b = int(np.argmin(st))
        if st[b] < sse:
            C, sse, D = Ct[b], st[b], Dt[b]
    return C


def _lloyd(P, w, Y, C, max_iter):
    """Weighted Lloyd iterations of R batched runs C (R, k, d).

    Each run stops on its own once less than ``_TOL`` of the weight changes
    cluster (so a run's result does not depend on the batch).  Returns
    centroids, the SSE of each run and each point's squared distance to its
    centroid.  Empty clusters keep their centroid."""
    R, k, d = C.shape
    m, wsum = len(P), w.sum()
    wt = np.tile(w, R)  # a prefix of r * m entries serves r runs
    wp = np.tile(P.T, R) * wt
    C = C.reshape(R * k, d).copy()
    labels = _nearest_approx(Y, C, k)
    active = np.arange(R)
    for _ in range(max_iter):
        r = len(active)
        rows = (active[:, None] * k + np.arange(k)).reshape(-1)
        flat = (labels[active] + (np.arange(r) * k)[:, None]).reshape(-1)
        cnt = np.bincount(flat, wt[: r * m], r * k)
        ok = np.flatnonzero(cnt)
        filled, cnt = rows[ok], cnt[ok]
        for a in range(d):
            C[filled, a] = np.bincount(flat, wp[a, : r * m], r * k)[ok] / cnt
        new = _nearest_approx(Y, C[rows], k)
        moved = (new != labels[active]) @ w
        labels[active] = new
        active = active[moved > _TOL * wsum]
        if not len(active):
            break
    D = _squared_distances(P, C, labels + (np.arange(R) * k)[:, None])
    return C.reshape(R, k, d), D @ w, D


def _squared_distances(P, C, labels):
    """``|P[i] - C[labels[r, i]]|^2`` for every run r and point i, (R, m): ``labels`` are rows of
    ``C`` (all runs' centroids, (R * k, d)). Summed axis by axis, with no (R, m, d) temporary (on
    2-D points a fifth of the time the whole-array form took)."""
    D = np.square(P[:, 0] - C[labels, 0])
    for a in range(1, P.shape[1]):
        D += np.square(P[:, a] - C[labels, a])
    return D


def _kmeanspp(P, w, k, rng, R):
    """Greedy k-means++ (2 + log k candidates per centre), R runs: (R, k, d)."""
    m = len(P)
    trials = 2 + int(math.log(k))
    p2 = (P * P).sum(1)

    def sq_dist(idx):  # (..., m) distances from P[idx] to all points
        return np.maximum(p2[idx][..., None] + p2 - 2.0 * (P[idx] @ P.T), 0.0)

    def draw(pot, size):  # per row, indices with probability ~ pot
        cum = np.cumsum(pot, axis=1)
        u = rng.random((len(pot), size)) * cum[:, -1:]
        idx = [np.searchsorted(c, v, side="right") for c, v in zip(cum, u)]
        return np.minimum(np.stack(idx), m - 1)

    chosen = np.empty((R, k), np.intp)
    chosen[:, 0] = draw(np.broadcast_to(w, (R, m)), 1)[:, 0]
    D = sq_dist(chosen[:, 0])
    rows = np.arange(R)
    for j in range(1, k):
        cand = draw(w * D, trials)
        Dc = np.minimum(D[:, None, :], sq_dist(cand))  # (R, trials, m)
        best = np.argmin(Dc @ w, axis=1)
        chosen[:, j] = cand[rows, best]
        D = Dc[rows, best]
    return P[chosen]


def _polish(frame, grid, z, rng):
    """Lloyd on the exact points: cells that stay in one Voronoi region while
    centroids move by ``_MARGIN`` fine bins count as one weighted point each;
    the other points singly (a uniform sample of ``_POLISH_POINTS`` if more)."""
    labels, loose = grid.split(z, _MARGIN * grid.width)
    pure = labels >= 0
    weight = 1.0
    if len(loose) > _POLISH_POINTS:
        weight = len(loose) / _POLISH_POINTS
        loose = np.sort(rng.choice(loose, _POLISH_POINTS, replace=False))
    P = np.concatenate([grid.sums[pure] / grid.count[pure, None], frame.Y[:-2, loose].T])
    w = np.concatenate([grid.count[pure], np.full(len(loose), weight)])
    iters = int(np.clip(_POLISH_WORK // (len(P) * len(z)), 1, _POLISH_ITERS))
    return _lloyd(P, w, _aug(P), z[None], iters)[0][0]


def _refine(frame, grid, z, to_storage, steps):
    """``to_storage(z)`` after up to ``steps`` Lloyd steps on all exact points
    through ``to_storage``; a step is kept only if it lowers the SSE under the
    labels it came from (which bounds the SSE after re-assignment)."""
    k, d = z.shape
    lut = _stored(to_storage, frame, z)
    zl = frame.normalize(lut)
    for _ in range(steps):
        cnt, sums = np.zeros(k), np.zeros((k, d))
        loose = None
        if grid.pos is not None:
            labels, loose = grid.split(zl)
            pure = labels >= 0
            cnt += np.bincount(labels[pure], grid.count[pure], k)
            sums += np.stack([np.bincount(labels[pure], v, k) for v in grid.sums[pure].T], 1)
        for Y in _point_columns(frame.Y, loose):
            lab = _nearest_approx(Y, zl, k)[0]
            cnt += np.bincount(lab, minlength=k)
            sums += np.stack([np.bincount(lab, Y[a], k) for a in range(d)], 1)
        zn = zl.copy()
        zn[cnt > 0] = sums[cnt > 0] / cnt[cnt > 0, None]
        new = _stored(to_storage, frame, zn)
        zn = frame.normalize(new)
        # SSE(z) under fixed labels = sum|y|^2 - 2 sum_j z_j.sums_j + cnt_j |z_j|^2
        sse = [frame.sum_sq - 2 * (v * sums).sum() + cnt @ (v * v).sum(1) for v in (zl, zn)]
        if not sse[1] < sse[0] - 1e-9 * abs(sse[0]):
            break
        lut, zl = new, zn
    return lut


def _stored(to_storage, frame, z):
    """``to_storage`` of the raw centroids (of normalised z, or z if no frame)."""
    lut = np.ascontiguousarray(z if frame is None else frame.denormalize(z))
    if to_storage is not None:
        lut = np.array(to_storage(lut), np.float64)
    if lut.shape != z.shape or not np.isfinite(lut).all():
        raise ValueError("to_storage must return finite values of the input's shape")
    return lut


def _assign(frame, grid, lut):
    """Exact float64 nearest LUT entry of every point (ties to the lower index).

    Points of a cell with one candidate take it; with at most ``_CANDIDATES``
    the candidates' float64 distances decide; the rest is scored."""
    _, first = np.unique(lut + 0.0, axis=0, return_index=True)
    first = np.sort(first)  # distinct entries, first occurrences in order
    ulut, n = lut[first], frame.x.shape[0]
    first = first.astype(np.uint8)  # LUT index of each distinct entry (k <= 256)
    if len(ulut) == 1:
        return np.full(n, first[0], np.uint8)
    z = frame.normalize(ulut)
    if grid.pos is None:
        return first[_assign_scored(frame, None, ulut, z)]
    cand = grid.candidates(z)
    count = cand.sum(1)
    table = _candidate_table(cand, count, _CANDIDATES)
    if len(ulut) <= 4 * _CANDIDATES:  # scoring all entries is cheaper
        count = np.where(count > 1, _CANDIDATES + 1, 1)
    kind = np.append(np.minimum(count, _CANDIDATES + 1), _CANDIDATES + 1).astype(np.uint8)
    kind = kind[grid.pos]
    labels = np.append(first[table[:, 0]], 0).astype(np.uint8)[grid.pos]  # single candidates
    few = np.flatnonzero((kind > 1) & (kind <= _CANDIDATES))
    labels[few] = first[_assign_candidates(frame, few, table, grid.pos[few], ulut)]
    many = np.flatnonzero(kind > _CANDIDATES)
    labels[many] = first[_assign_scored(frame, many, ulut, z)]
    return labels


def _candidate_table(cand, count, L):
    """(C, L) ascending candidate indices per row of ``cand``, the last one
    repeated to fill the row (rows with more than L are cut)."""
    rows, cols = np.nonzero(cand)
    rank = np.arange(len(rows)) - (np.cumsum(count) - count)[rows]
    keep = rank < L
    table = np.zeros((len(cand), L), np.intp)
    table[rows[keep], rank[keep]] = cols[keep]
    last = np.minimum(count, L)[:, None] - 1
    return np.take_along_axis(table, np.minimum(np.arange(L), last), 1)


def _assign_candidates(frame, rows, table, cells, ulut):
    """Nearest of the candidate entries ``table[cells[i]]`` (ascending, L per row) for each x[rows[i]],
    by float64 distances; candidates ascend, so ties go to the lower index."""
    labels = np.empty(len(rows), np.intp)
    columns = [np.ascontiguousarray(ulut[:, a]) for a in range(ulut.shape[1])]
    step = 1 << 15
    for s in range(0, len(rows), step):
        xs = frame.x[rows[s : s + step]].astype(np.float64)
        cands = table[cells[s : s + step]]
        for l in range(table.shape[1]):
            j = cands[:, l]
            dist = 0.0
            for a, col in enumerate(columns):
                diff = xs[:, a] - col[j]
                diff = np.ldexp(diff, -frame.exp) if frame.exp else diff
                dist = dist + diff * diff
            if l == 0:
                best, lab = dist, j
            else:
                lab = np.where(dist < best, j, lab)
                best = np.minimum(dist, best)
        labels[s : s + step] = lab
    return labels


def _assign_scored(frame, rows, ulut, z):
    """Exact nearest entry of x[rows] (all if None) via verified float32 keys."""
    k, d = z.shape
    bits = max(1, (k - 1).bit_length())
    mask = (1 << bits) - 1
    # Error of a float32 score S_j = |y - z_j|^2 + off (scale 1): gemm and
    # norm rows alpha (|y| + |z_j|)^2 <= alpha (8|y|^2 + 2 D_j), input
    # rounding 2 sqrt(D_j) delta + delta^2 <= (10 D_j + 0.1) delta + delta^2,
    # dropped key bits beta S_j.  If every other key exceeds best + tol with
    # tol = A |y|^2 + B best + C, the best is the exact nearest (2x margin).
    zmax = float(np.sqrt((z * z).sum(1)).max())
    delta = d**0.5 * (frame.y_err + _EPS32 * zmax)
    alpha, beta = (2 * d + 4) * _EPS32, 2.0 ** (bits + 1) * _EPS32
    off = 4 * alpha * (d**0.5 + zmax) ** 2 + 4 * delta * (d**0.5 + zmax) + 1e-30
    A, B = 32 * alpha, 16 * beta + 24 * alpha + 120 * delta
    C = 0.4 * delta + 4 * delta**2 + 4 * alpha * off + 1e-30
    W = _score_rows(z, off)
    n = frame.Y.shape[1] if rows is None else len(rows)
    labels, ambiguous = np.empty(n, np.uint8), []
    step = max(256, _BLOCK // k)
    for a in range(0, n, step):
        part = slice(a, a + step) if rows is None else rows[a : a + step]
        Yc = frame.Y[:, part]
        K, kmin = _min_keys(W, Yc, k)
        K, kmin = K[0], kmin[0]
        best = (kmin & ~mask).view(np.float32)
        tol = Yc[d + 1] * np.float32(A) + (best * np.float32(B) + np.float32(C))
        thr = (best + tol).view(np.int32) | mask
        near = np.add.reduce(K <= thr, axis=0, dtype=np.uint8)
        if zmax > 1e6:  # LUT far outside the data: float32 scores meaningless
            near[:] = 0
        labels[a : a + step] = kmin & mask
        ambiguous.append(a + np.flatnonzero(near != 1))
    ambiguous = np.concatenate(ambiguous or [np.zeros(0, np.intp)])
    src = ambiguous if rows is None else rows[ambiguous]
    every = np.arange(k)[None]  # every entry is a candidate
    labels[ambiguous] = _assign_candidates(frame, src, every, np.zeros(len(src), np.intp), ulut)
    return labels
