"""Pruning masks: magnitude, block and n:m. Each returns a boolean *keep* mask.

Ties are broken deterministically: among equal magnitudes (or block norms) the
element (block) with the lower flat index is pruned first, so exactly the
requested number is pruned even when values repeat.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .quantize import magnitudes


def prune_count(size: int, sparsity: float) -> int:
    """``floor(size * sparsity)``, computed on the decimal value of ``sparsity``.

    Exact rational arithmetic keeps ``0.29 * 100`` at 29 rather than the
    28.999999999999996 binary floating point gives.
    """
    return int(Fraction(str(float(sparsity))) * size)


#: Arrays at least this large find their k-th smallest value through a bracket (``kth_smallest``);
#: ``np.partition`` of the MiniLM embedding's magnitudes (11.7 M values) took 66-85 ms, the bracket 25.
_BRACKET_MIN = 1 << 20
#: Values sampled (evenly spaced) to bracket the k-th smallest, and the bracket's half-width in
#: sample ranks: 8 standard deviations of a random sample's rank, so a bracket that misses (then
#: the whole array is partitioned) is a sign of periodic data, not of chance.
_BRACKET_SAMPLE = 1 << 16
_BRACKET_HALF_WIDTH = 8 * 128


def kth_smallest(flat: np.ndarray, k: int) -> np.generic:
    """``np.partition(flat, k)[k]`` for a 1-D array of finite values (0 <= k < size).

    Large arrays bracket it between two values of an evenly spaced sample, count
    the values below the bracket and partition only the values inside it: a few
    passes over the array instead of a selection over all of it. The result is the
    same value either way.
    """
    if flat.size < _BRACKET_MIN:
        return np.partition(flat, k)[k]
    sample = np.sort(flat[:: flat.size // _BRACKET_SAMPLE])
    rank = (k * sample.size) // flat.size
    low_rank, high_rank = rank - _BRACKET_HALF_WIDTH, rank + _BRACKET_HALF_WIDTH
    low = sample[low_rank] if low_rank >= 0 else None
    high = sample[high_rank] if high_rank < sample.size else None
    inside = np.ones(flat.size, dtype=bool) if high is None else flat <= high
    below = 0
    if low is not None:
        under = flat < low
        below = int(np.count_nonzero(under))
        inside &= ~under
    candidates = np.compress(inside, flat)
    if not below <= k < below + candidates.size:  # the sample misled (periodic data): select over all
        return np.partition(flat, k)[k]
    return np.partition(candidates, k - below)[k - below]


def lowest_k_mask(scores: np.ndarray, count: int) -> np.ndarray:
    """True for the ``count`` smallest scores (ties: lower flat index first), as a flat bool array."""
    flat = np.asarray(scores).reshape(-1)
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float32)  # exact for float16 / bfloat16
    if count <= 0:
        return np.zeros(flat.size, dtype=bool)
    if count >= flat.size:
        return np.ones(flat.size, dtype=bool)
    threshold = kth_smallest(flat, count - 1)
    chosen = flat < threshold
    missing = count - int(np.count_nonzero(chosen))
    if missing:
        chosen[np.flatnonzero(flat == threshold)[:missing]] = True
    return chosen


def magnitude_mask(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep mask pruning exactly ``floor(size * sparsity)`` lowest-magnitude elements."""
    pruned = lowest_k_mask(magnitudes(weight), prune_count(weight.size, sparsity))
    return ~pruned.reshape(weight.shape)


def block_mask(weight2d: np.ndarray, block_size: int, sparsity: float) -> np.ndarray:
    """Keep mask pruning whole blocks of ``block_size`` consecutive rows (output channels).

    ``weight2d`` is (channels, positions): a block is ``block_size`` consecutive
    channels at one position. Blocks are ranked by L2 norm; a trailing partial
    block is ranked by its norm scaled to a full block (its RMS), so a short block
    is not pruned just for being short. ``floor(n_blocks * sparsity)`` blocks go.
    """
    channels, positions = weight2d.shape
    n_full, tail = divmod(channels, block_size)
    squares = np.square(weight2d.astype(np.float64))
    scores = [np.sqrt(squares[: n_full * block_size].reshape(n_full, block_size, positions).sum(axis=1))]
    if tail:
        scores.append(np.sqrt(squares[n_full * block_size :].sum(axis=0, keepdims=True) * (block_size / tail)))
    block_scores = np.concatenate(scores, axis=0)  # (n_blocks, positions)
    pruned = lowest_k_mask(block_scores, prune_count(block_scores.size, sparsity))
    pruned_rows = np.repeat(pruned.reshape(block_scores.shape), block_size, axis=0)[:channels]
    return ~pruned_rows


def n_m_mask(weight2d: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep mask zeroing the ``n`` lowest-magnitude of every ``m`` consecutive elements per row.

    ``weight2d`` is (rows, input channels). A trailing partial group of ``r``
    elements loses ``floor(n * r / m)`` of them, keeping the same ratio.
    """
    rows, length = weight2d.shape
    magnitude = np.abs(weight2d.astype(np.float64))
    keep = np.ones((rows, length), dtype=bool)
    n_full, tail = divmod(length, m)
    if n_full and n:
        groups = magnitude[:, : n_full * m].reshape(rows, n_full, m)
        # A stable argsort ranks equal magnitudes by position, so ties prune the earlier element.
        order = np.argsort(groups, axis=-1, kind="stable")[..., :n]
        full = np.ones(groups.shape, dtype=bool)
        np.put_along_axis(full, order, False, axis=-1)
        keep[:, : n_full * m] = full.reshape(rows, n_full * m)
    tail_prune = (n * tail) // m
    if tail and tail_prune:
        order = np.argsort(magnitude[:, n_full * m :], axis=-1, kind="stable")[:, :tail_prune]
        part = np.ones((rows, tail), dtype=bool)
        np.put_along_axis(part, order, False, axis=-1)
        keep[:, n_full * m :] = part
    return keep
