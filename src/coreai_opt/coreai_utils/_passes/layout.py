"""Reshape weights so each row holds one group's values, and back.

Every granularity is expressed the same way: a row holds the values of
``channels / n_groups`` consecutive output channels. Scalar clustering does not
depend on the order of a row's values, so ``group_rows`` keeps them in storage
order and copies whole runs of a group's channels (an element-wise transpose
costs about 9 ns per value; runs moved as opaque items, a tile of rows at a time,
0.2-2 ns). Vector palettization moves the output-channel axis
to the front (``channel_major``) and gathers ``cluster_dim`` consecutive
channels at the same position into one vector.
"""

from __future__ import annotations

import numpy as np

from .._types import CompressionGranularity


def channel_major(weight: np.ndarray, out_axis: int) -> np.ndarray:
    """(channels, rest) view with output channels first."""
    moved = np.moveaxis(weight, out_axis, 0)
    return moved.reshape(moved.shape[0], -1)


def restore_layout(rows: np.ndarray, shape: tuple[int, ...], out_axis: int) -> np.ndarray:
    """Inverse of :func:`channel_major` for an array whose output axis has ``shape[out_axis]`` entries."""
    moved_shape = (shape[out_axis], *shape[:out_axis], *shape[out_axis + 1 :])
    return np.moveaxis(rows.reshape(moved_shape), 0, out_axis)


def nearest_group_size(channels: int, requested: int, unit: int = 1) -> int:
    """The multiple of ``unit`` dividing ``channels`` closest to ``requested`` (ties: the smaller)."""
    options = [size for size in range(unit, channels + 1, unit) if channels % size == 0]
    return min(options, key=lambda size: (abs(size - requested), size))


def group_count(channels: int, granularity: CompressionGranularity, group_size: int,
                unit: int = 1) -> tuple[int, str | None]:
    """Number of LUTs along the output axis, and a note when ``group_size`` had to change.

    ``unit`` channels always share a LUT (the vector length of vector palettization).
    """
    if granularity == CompressionGranularity.PER_TENSOR:
        return 1, None
    if granularity == CompressionGranularity.PER_CHANNEL:
        return channels // unit, None
    size = nearest_group_size(channels, group_size, unit)
    note = None
    if size != group_size:
        note = (f"{channels} output channels are not divisible by group_size {group_size}"
                + (f" in multiples of cluster_dim {unit}" if unit > 1 else "")
                + f"; used groups of {size} ({channels // size} LUT{'s' if channels // size > 1 else ''})")
    return channels // size, note


def _around(shape: tuple[int, ...], out_axis: int) -> int:
    """Number of positions before the output axis (product of the leading dimensions)."""
    return int(np.prod(shape[:out_axis], dtype=np.int64))


#: Output bytes a tile of ``_swapped_runs`` writes at a time, and its fewest rows: tiles keep the
#: scattered writes in the caches (2-6x faster for runs of 1-16 bytes, 2x for 64, measured).
_TILE_BYTES = 1 << 18
_MIN_TILE_ROWS = 16


def _swapped_runs(array: np.ndarray, a: int, b: int) -> np.ndarray:
    """A contiguous ``array`` seen as (a, b, run) with its first two axes swapped: a (b, a * run)
    copy (a view when ``a`` or ``b`` is 1), each run moved as one opaque item."""
    if a == 1 or b == 1 or array.size == 0:
        return array.reshape(a, b, -1).transpose(1, 0, 2).reshape(b, -1)
    item = np.dtype((np.void, array.size // (a * b) * array.itemsize))
    source = np.ascontiguousarray(array).reshape(-1).view(item).reshape(a, b)
    out = np.empty((b, a), item)
    tile = max(_MIN_TILE_ROWS, _TILE_BYTES // (b * item.itemsize))
    for start in range(0, a, tile):
        out[:, start : start + tile] = source[start : start + tile].T
    return out.view(array.dtype)


def group_rows(weight: np.ndarray, out_axis: int, n_groups: int) -> np.ndarray:
    """(n_groups, values per group): each group's values in storage order (a view when the
    output axis leads, else a copy of runs of ``channels / n_groups * trailing size`` values)."""
    return _swapped_runs(weight, _around(weight.shape, out_axis), n_groups)


def from_group_rows(rows: np.ndarray, shape: tuple[int, ...], out_axis: int) -> np.ndarray:
    """Inverse of :func:`group_rows`: the array of ``shape`` whose groups are ``rows``."""
    return _swapped_runs(rows, rows.shape[0], _around(shape, out_axis)).reshape(shape)


def runs_fill_bytes(shape: tuple[int, ...], out_axis: int, n_groups: int, n_bits: int) -> bool:
    """Whether each run of a group's consecutive values in storage (see ``group_rows``) fills
    whole bytes as ``n_bits``-bit values, so group rows can be packed before ``packed_from_group_rows``."""
    runs = n_groups * _around(shape, out_axis)
    return int(np.prod(shape, dtype=np.int64)) // runs * n_bits % 8 == 0


def packed_from_group_rows(rows: np.ndarray, shape: tuple[int, ...], out_axis: int) -> np.ndarray:
    """``from_group_rows`` for group rows already packed to sub-byte values ((groups, bytes) uint8,
    their runs filling whole bytes): the packed bit stream of the array of ``shape``."""
    return _swapped_runs(rows, rows.shape[0], _around(shape, out_axis)).reshape(-1)


def vector_rows(weight2d: np.ndarray, n_groups: int, cluster_dim: int) -> np.ndarray:
    """(n_groups, vectors per group, cluster_dim) float32: vectors of consecutive channels at one position.
    Filled a coordinate at a time (whole rows read in order: a third less time than one transposing copy)."""
    channels, rest = weight2d.shape
    vectors = np.empty((channels // cluster_dim, rest, cluster_dim), np.float32)
    source = weight2d.reshape(channels // cluster_dim, cluster_dim, rest)
    for a in range(cluster_dim):
        vectors[:, :, a] = source[:, a, :]
    return vectors.reshape(n_groups, -1, cluster_dim)


def lut_shape(rank: int, out_axis: int, n_groups: int, entries: int, vector: int) -> tuple[int, ...]:
    """Shape of a ``lut_to_dense`` LUT with ``n_groups`` blocks along the output axis."""
    blocks = [1] * rank
    blocks[out_axis] = n_groups
    return (*blocks, entries, vector)


def channel_param_shape(rank: int, out_axis: int, channels: int) -> tuple[int, ...]:
    """Shape of a per-output-channel parameter broadcast over a weight of ``rank``."""
    shape = [1] * rank
    shape[out_axis] = channels
    return tuple(shape)
