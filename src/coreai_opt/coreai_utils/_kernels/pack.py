"""Sub-byte bit packing in the layout Core AI uses.

Element ``i`` of an ``n``-bit tensor occupies bits ``[i*n, (i+1)*n)`` of a
little-endian bit stream (bit 0 is the least significant bit of byte 0).
Values are packed in groups of ``g = 8 / gcd(n, 8)`` elements, which fill
exactly ``n * g / 8`` whole bytes, one column of the group at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from math import gcd

import numpy as np


def packed_size(count: int, n_bits: int) -> int:
    """Bytes needed for ``count`` elements of ``n_bits`` each."""
    return (count * n_bits + 7) // 8


def _group(n_bits: int) -> tuple[int, int, type]:
    """(elements per group, bytes per group, word dtype) for ``n_bits``."""
    per_group = 8 // gcd(n_bits, 8)
    n_bytes = n_bits * per_group // 8
    word = np.uint8 if n_bytes == 1 else np.uint32 if n_bytes <= 4 else np.uint64
    return per_group, n_bytes, word


def _check(n_bits: int) -> None:
    if not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be in [1, 8], got {n_bits}")


def pack_bits(values: np.ndarray, n_bits: int) -> np.ndarray:
    """Pack unsigned integers below ``2**n_bits`` into a uint8 bit stream."""
    _check(n_bits)
    flat = np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)
    if n_bits == 8:
        return flat.copy()
    per_group, n_bytes, word_type = _group(n_bits)
    count = flat.size
    n_groups = -(-count // per_group)
    if n_groups * per_group != count:
        flat = np.concatenate([flat, np.zeros(n_groups * per_group - count, np.uint8)])
    if n_bits == 4:  # each little-endian byte pair a + 256 b becomes a | b << 4 in its low byte: 1.8x faster
        pairs = flat.view("<u2")
        words = pairs >> np.uint16(4)
        words |= pairs
        return words.astype(np.uint8)
    columns = flat.reshape(n_groups, per_group)
    words = columns[:, 0].astype(word_type)
    for j in range(1, per_group):
        words |= columns[:, j].astype(word_type) << word_type(n_bits * j)
    if n_bytes == 1:
        out = words
    else:
        out = np.empty((n_groups, n_bytes), np.uint8)
        for b in range(n_bytes):
            out[:, b] = words >> word_type(8 * b)
    return out.reshape(-1)[: packed_size(count, n_bits)]


def with_packed_indices(cluster: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], n_bits: int,
                        values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cluster(values)``, its indices ((rows, n), each below ``2**n_bits``) packed row by row:
    (lut, (rows, n * n_bits / 8) uint8). A row must fill whole bytes (``n * n_bits % 8 == 0``)."""
    lut, indices = cluster(values)
    rows, n = indices.shape
    if n * n_bits % 8:
        raise ValueError(f"rows of {n} {n_bits}-bit indices do not fill whole bytes")
    return lut, pack_bits(indices, n_bits).reshape(rows, n * n_bits // 8)


def unpack_bits(packed: np.ndarray, n_bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_bits`: a uint8 array of ``shape``."""
    _check(n_bits)
    count = int(np.prod(shape, dtype=np.int64))
    data = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if n_bits == 8:
        return data[:count].copy().reshape(shape)
    per_group, n_bytes, word_type = _group(n_bits)
    n_groups = -(-count // per_group)
    padded = np.zeros(n_groups * n_bytes, np.uint8)
    used = min(data.size, padded.size)
    padded[:used] = data[:used]
    chunks = padded.reshape(n_groups, n_bytes)
    words = chunks[:, 0].astype(word_type)
    for b in range(1, n_bytes):
        words |= chunks[:, b].astype(word_type) << word_type(8 * b)
    mask = word_type((1 << n_bits) - 1)
    out = np.empty((n_groups, per_group), np.uint8)
    for j in range(per_group):
        out[:, j] = (words >> word_type(n_bits * j)) & mask
    return out.reshape(-1)[:count].reshape(shape)
