"""Palettization encoder: a weight becomes n-bit indices into per-group LUTs.

Decompression graph (innermost first)::

    lut      = const LUT (weight dtype)                       | or
    lut      = blockwise_shift_scale(const LUT codes, per-LUT scale, zero point, 0)   (lut_dtype)
    dense    = lut_to_dense(const ui<n> indices, lut, axis = output channel axis)
    weight   = blockwise_shift_scale(dense, per-channel scale, 0, 0)   (enable_per_channel_scale)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from .._dtypes import bit_width, numpy_dtype, uint_type
from .._encoding import Const, LutToDense, Node, ShiftScale
from .._ir import Role
from .._kernels.assign import nearest_vectors
from .._kernels.kmeans1d import nearest_indices, palettize_rows
from .._kernels.kmeans_vec import palettize_vectors
from .._kernels.pack import with_packed_indices
from .._kernels.quantize import FORMATS, dequantize, quantize_blocks
from .._kernels.rounding import round_through
from .._pool import KernelPool, Stacked
from . import layout
from .dequantize import dequantized
from .options import PalettizeOptions
from .runner import Encoded, Skipped


#: Values per chunk of groups clustered together (bounds memory, lets worker processes share one weight)...
_CHUNK_VALUES = 1 << 22
#: ... but at least this many groups where that stays under ``_MAX_CHUNK_VALUES``: each kernel call
#: costs a fixed ~25 ms of small numpy steps, which groups of 65,536 values in chunks of 64 felt
#: (4-bit, 25 ns per value against 20 ns in chunks of 256, measured). The cap bounds a worker's
#: temporaries (1.1 B-weight benchmark: the same time with 8 M as with 16 M, 300 MB lower peak).
_CHUNK_GROUPS = 256
_MAX_CHUNK_VALUES = 1 << 23


def _storage_rounding(element_type: str) -> Callable[[np.ndarray], np.ndarray]:
    return partial(round_through, dtype=numpy_dtype(element_type))


def _channel_scales(weight: np.ndarray, out_axis: int, element_type: str) -> np.ndarray:
    """Per-channel max magnitude as stored, shaped to broadcast over ``weight``; 1 where that would be 0.
    (Magnitudes and their maximum are exact in the weight's own type.)"""
    others = tuple(axis for axis in range(weight.ndim) if axis != out_axis)
    scale = np.max(np.abs(weight), axis=others, keepdims=True).astype(numpy_dtype(element_type))
    return np.where(scale > 0, scale, np.ones((), scale.dtype))


def _scaled_values(weight: np.ndarray, channel_scale: np.ndarray) -> np.ndarray:
    """``weight / channel_scale`` rounded to float32. Dividing in float32 is exact rounding of the
    true quotient, the same bits as dividing in float64 and rounding (float64 has more than twice
    float32's precision plus two bits, so the double rounding is harmless)."""
    return np.divide(weight, channel_scale, dtype=np.float32)


@dataclass
class _Prepared:
    """A weight ready to cluster: its groups, and what finishing its graph needs."""

    groups: np.ndarray
    shape: tuple[int, ...]
    out_axis: int
    n_groups: int
    channel_scale: np.ndarray | None
    note: str | None


def _row_chunks(parts: list[np.ndarray], per_chunk: int) -> list[np.ndarray | Stacked]:
    """The rows of the ``parts`` one after the other, ``per_chunk`` at a time (the last chunk may be
    shorter): a view where a chunk lies in one part, else a ``Stacked`` of views, never joined here
    (a worker process receives it as one array)."""
    ends = np.cumsum([part.shape[0] for part in parts]).tolist()
    starts = [0, *ends[:-1]]
    chunks: list[np.ndarray | Stacked] = []
    for first in range(0, ends[-1], per_chunk):
        last = min(first + per_chunk, ends[-1])
        pieces = [part[max(first, start) - start : min(last, end) - start]
                  for part, start, end in zip(parts, starts, ends, strict=True) if start < last and end > first]
        chunks.append(pieces[0] if len(pieces) == 1 else Stacked(pieces))
    return chunks


class PalettizeEncoder:
    """Callable turning one weight into its palettized decompression graph.

    Weights that ``batch_key`` gives the same key may be encoded together
    (``encode_batch``): the groups of weights whose groups have the same length
    are clustered in one kernel call, which pays the DP's and Lloyd's per-call
    costs once. Groups are clustered independently, so batching never changes a
    weight's result.
    """

    def __init__(self, options: PalettizeOptions) -> None:
        self.options = options

    def __call__(self, weight: np.ndarray, role: Role, element_type: str, pool: KernelPool) -> Encoded | Skipped:
        return self.encode_batch([weight], [role], element_type, pool)[0]

    def sorts(self, element_type: str) -> bool:
        """Whether clustering weights of this type sorts their values: scalar clustering sorts 32-
        and 64-bit floats (16-bit ones are mostly counted by bit pattern instead)."""
        return self.options.cluster_dim == 1 and bit_width(element_type) >= 32

    def batch_key(self, shape: tuple[int, ...], role: Role, element_type: str) -> tuple | None:
        """Weights with equal keys may share one ``encode_batch`` call (None: encode alone): scalar
        clustering of groups of the same length and type."""
        opts = self.options
        if opts.cluster_dim != 1:
            return None
        n_groups, _ = layout.group_count(shape[role.out_axis], opts.granularity, opts.group_size)
        return math.prod(shape) // n_groups, element_type

    def encode_batch(self, weights: list[np.ndarray], roles: list[Role], element_type: str,
                     pool: KernelPool) -> list[Encoded | Skipped]:
        """Each weight's outcome; the groups of all of them are clustered in one kernel call."""
        prepared = [self._prepare(weight, role, element_type) for weight, role in zip(weights, roles, strict=True)]
        ready = [item for item in prepared if isinstance(item, _Prepared)]
        if not ready:
            return prepared
        packs = self._packs_indices(ready)
        lut, indices = self._cluster([item.groups for item in ready], element_type, pool, packs)
        ends = np.cumsum([item.n_groups for item in ready])
        finished = iter([self._finish(item, lut[end - item.n_groups : end], indices[end - item.n_groups : end],
                                      element_type, packs) for item, end in zip(ready, ends, strict=True)])
        return [next(finished) if isinstance(item, _Prepared) else item for item in prepared]

    def _prepare(self, weight: np.ndarray, role: Role, element_type: str) -> _Prepared | Skipped:
        opts = self.options
        out_axis = role.out_axis
        channels = weight.shape[out_axis]
        if channels % opts.cluster_dim:
            return Skipped(f"{channels} output channels are not divisible by cluster_dim {opts.cluster_dim}")
        n_groups, note = layout.group_count(channels, opts.granularity, opts.group_size, opts.cluster_dim)
        channel_scale = None
        values = weight  # scalar clustering takes 16-bit weights as they are: they are counted, not sorted
        if opts.enable_per_channel_scale:
            channel_scale = _channel_scales(weight, out_axis, element_type)
            values = _scaled_values(weight, channel_scale)
        return _Prepared(self._groups(values, out_axis, n_groups), weight.shape, out_axis, n_groups,
                         channel_scale, note)

    def _packs_indices(self, ready: list[_Prepared]) -> bool:
        """Whether the kernel calls hand back their indices packed (less to send, nothing to pack
        here): scalar sub-byte indices kept as clustered, whose runs in storage fill whole bytes."""
        opts = self.options
        return opts.cluster_dim == 1 and opts.lut_dtype is None and opts.n_bits < 8 and all(
            layout.runs_fill_bytes(item.shape, item.out_axis, item.n_groups, opts.n_bits) for item in ready)

    def _finish(self, item: _Prepared, lut: np.ndarray, indices: np.ndarray, element_type: str,
                packed: bool = False) -> Encoded:
        """The weight's graph from its LUTs and indices ((G, n), or with ``packed`` its group rows packed)."""
        opts = self.options
        rank, out_axis = len(item.shape), item.out_axis
        lut_node: Node = Const(lut.reshape(self._lut_shape(rank, out_axis, item.n_groups)).astype(
            numpy_dtype(element_type)), element_type)
        if opts.lut_dtype is not None:
            lut_node, indices = self._quantized_lut(item.groups, lut, element_type, rank, out_axis)
        index_type = uint_type(opts.n_bits)
        if packed:
            index_const = Const(layout.packed_from_group_rows(indices, item.shape, out_axis), index_type, item.shape)
        else:
            index_const = Const.packed(self._index_array(indices, item.shape, out_axis), index_type)
        node: Node = LutToDense(index_const, lut_node, out_axis)
        if item.channel_scale is not None:
            node = self._scaled(node, item.channel_scale, element_type)
        channels = item.shape[out_axis]
        return Encoded(node, self._detail(item.n_groups, channels, element_type), (item.note,) if item.note else ())

    def _lut_shape(self, rank: int, out_axis: int, n_groups: int) -> tuple[int, ...]:
        return layout.lut_shape(rank, out_axis, n_groups, 2**self.options.n_bits, self.options.cluster_dim)

    def _groups(self, values: np.ndarray, out_axis: int, n_groups: int) -> np.ndarray:
        """What is clustered: (G, n) scalars in storage order, or (G, n, d) vectors of consecutive channels."""
        unit = self.options.cluster_dim
        if unit == 1:
            return layout.group_rows(values, out_axis, n_groups)
        return layout.vector_rows(layout.channel_major(values, out_axis), n_groups, unit)

    def _index_array(self, indices: np.ndarray, shape: tuple[int, ...], out_axis: int) -> np.ndarray:
        """The (G, n) indices laid out like the weight (one index per vector along the output axis)."""
        unit = self.options.cluster_dim
        if unit == 1:
            return layout.from_group_rows(indices, shape, out_axis)
        index_shape = list(shape)
        index_shape[out_axis] //= unit
        return layout.restore_layout(indices.reshape(index_shape[out_axis], -1), tuple(index_shape), out_axis)

    def _cluster(self, parts: list[np.ndarray], element_type: str, pool: KernelPool,
                 packed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(lut (G, k[, d]) float64 as stored, indices (G, n) uint8, or with ``packed`` (G, n * n_bits / 8)
        each group's indices packed) of the groups of ``parts`` (weights' groups, one after the other).

        Groups are independent, so a weight with many of them is clustered in
        fixed-size chunks of groups, spread over the pool's worker processes;
        the chunk boundaries depend on the shape only, so the result does not
        depend on the number of workers. Per-tensor groups are whole weights (a
        batch the runner has already bounded) and go in one call: split, a batch
        would take every worker while a larger weight queued behind it.
        """
        opts = self.options
        kernel = palettize_rows if opts.cluster_dim == 1 else palettize_vectors
        cluster = partial(kernel, k=2**opts.n_bits, round_decimals=opts.round_decimals,
                          to_storage=_storage_rounding(element_type))
        if packed:
            cluster = partial(with_packed_indices, cluster, opts.n_bits)
        if opts.granularity.value == "per_tensor":
            per_chunk = sum(part.shape[0] for part in parts)
        else:
            size = math.prod(parts[0].shape[1:]) or 1
            per_chunk = max(1, min(max(_CHUNK_VALUES // size, _CHUNK_GROUPS), _MAX_CHUNK_VALUES // size))
        results = pool.map(cluster, _row_chunks(parts, per_chunk))
        if len(results) == 1:
            return results[0]
        return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])

    def _quantized_lut(self, groups, lut, element_type, rank, out_axis) -> tuple[Node, np.ndarray]:
        """LUT codes with one scale per LUT, and indices re-assigned to the decoded entries."""
        fmt = FORMATS[self.options.lut_dtype.value]
        float_dtype = numpy_dtype(element_type)
        reduce_axes = tuple(range(1, lut.ndim))
        codes, scale = quantize_blocks(lut, fmt, reduce_axes, float_dtype)
        decoded = dequantize(codes, scale, fmt).astype(float_dtype).astype(np.float64)
        if self.options.cluster_dim == 1:
            order = np.argsort(decoded, axis=1, kind="stable")
            codes = np.take_along_axis(codes, order, axis=1)
            decoded = np.take_along_axis(decoded, order, axis=1)
            indices = nearest_indices(groups, decoded)
        else:
            indices = nearest_vectors(groups, decoded)
        shape = self._lut_shape(rank, out_axis, groups.shape[0])
        node = dequantized(codes.reshape(shape), scale.reshape((*shape[:-2], 1, 1)), fmt, element_type)
        return node, indices

    @staticmethod
    def _scaled(node: Node, channel_scale: np.ndarray, element_type: str) -> Node:
        """``node`` times the per-channel scale (already shaped to broadcast over the weight)."""
        zeros = np.zeros(channel_scale.shape, numpy_dtype(element_type))
        return ShiftScale(node, Const(channel_scale, element_type), Const(zeros, element_type),
                          Const(zeros.copy(), element_type))

    def _detail(self, n_groups: int, channels: int, element_type: str) -> str:
        opts = self.options
        parts = [f"palettized {opts.n_bits}-bit", str(opts.granularity.value)]
        if opts.granularity.value == "per_grouped_channel":
            parts[-1] += f" (groups of {channels // n_groups})"
        parts.append(f"{n_groups} LUT{'s' if n_groups > 1 else ''} of {2**opts.n_bits}")
        if opts.cluster_dim > 1:
            parts.append(f"vectors of {opts.cluster_dim}")
        parts.append(f"LUT {opts.lut_dtype.value if opts.lut_dtype else element_type}")
        if opts.enable_per_channel_scale:
            parts.append("per-channel scale")
        return ", ".join(parts)
