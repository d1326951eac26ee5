"""Sparsification encoder: prune a weight and store its non-zero values with a bitmask.

Decompression graphs::

    plain:     sparse_to_dense(values, mask)
    int8/fp8:  blockwise_shift_scale(sparse_to_dense(codes, mask), per-channel scale, 0, 0)
    uint8:     sparse_to_dense(blockwise_shift_scale(codes, scale, 128, 0), mask)
    n-bit LUT: sparse_to_dense(lut_to_dense(indices, lut, 0), mask)

int8 and fp8 codes of 0 decode to 0, so they are dequantized after densifying,
with a scale per output channel. uint8 codes are offset by 128, so a pruned
position (code 0 in the dense tensor) would not decode to 0: its codes are
dequantized before densifying, with one scale for the weight.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .._dtypes import numpy_dtype, uint_type
from .._encoding import Const, LutToDense, Node, ShiftScale, SparseToDense
from .._ir import Role
from .._kernels.kmeans1d import palettize_rows
from .._kernels.prune import block_mask, magnitude_mask, n_m_mask
from .._kernels.quantize import FORMATS, block_scales, kept_codes, kept_values, masked_block_scales, quantize
from .._kernels.rounding import round_through
from .._pool import KernelPool
from . import layout
from .dequantize import dequantized
from .options import SparsifyOptions
from .runner import Encoded, Skipped

_STRUCTURED_KINDS = frozenset({"linear", "conv"})


class SparsifyEncoder:
    """Callable turning one weight into its sparse decompression graph."""

    def __init__(self, options: SparsifyOptions) -> None:
        self.options = options

    @property
    def uses_pool(self) -> bool:
        """Whether encoding calls the kernel pool (only palettized non-zeros do)."""
        return self.options.palettize_nbits is not None

    def sorts(self, element_type: str) -> bool:
        """Whether encoding sorts the weight's values in the pool: palettized non-zeros are."""
        return self.uses_pool

    def __call__(self, weight: np.ndarray, role: Role, element_type: str, pool: KernelPool) -> Encoded | Skipped:
        keep = self._keep_mask(weight, role)
        if isinstance(keep, Skipped):
            return keep
        pruned = int(keep.size - np.count_nonzero(keep))
        detail = f"{self._method(role)}: {pruned} of {keep.size} zero ({100.0 * pruned / keep.size:.1f}%)"
        if not keep.any():
            zeros = Const(np.zeros(weight.shape, numpy_dtype(element_type)), element_type)
            return Encoded(zeros, detail + ", stored as a zero splat")
        mask = Const.packed(keep, "ui1") if not keep.all() else Const(keep.astype(np.uint8), "ui1")
        node, storage = self._values(weight, keep, mask, role, element_type, pool)
        return Encoded(node, f"{detail}, non-zeros {storage}")

    def _method(self, role: Role) -> str:
        opts = self.options
        if opts.n_m_ratio is not None:
            n, m = opts.n_m_ratio
            return f"{n}:{m} along axis {role.in_axis}"
        if opts.block_size is not None:
            return f"blocks of {opts.block_size} output channels"
        return "magnitude"

    def _keep_mask(self, weight: np.ndarray, role: Role) -> np.ndarray | Skipped:
        opts = self.options
        structured = opts.n_m_ratio is not None or opts.block_size is not None
        if structured and not role.kinds <= _STRUCTURED_KINDS:
            kinds = ", ".join(sorted(role.kinds))
            return Skipped(f"block and n:m sparsity apply to linear and conv weights only; this is used as {kinds}")
        if opts.n_m_ratio is not None:
            if role.in_axis is None:
                return Skipped("n:m sparsity needs an input channel axis; this weight has none")
            moved = np.moveaxis(weight, role.in_axis, -1)
            keep = n_m_mask(moved.reshape(-1, moved.shape[-1]), *opts.n_m_ratio)
            return np.moveaxis(keep.reshape(moved.shape), -1, role.in_axis)
        if opts.block_size is not None:
            channels = weight.shape[role.out_axis]
            if channels < opts.block_size:
                return Skipped(f"{channels} output channels are fewer than block_size {opts.block_size}")
            keep2d = block_mask(layout.channel_major(weight, role.out_axis), opts.block_size, opts.target_sparsity)
            return layout.restore_layout(keep2d, weight.shape, role.out_axis)
        return magnitude_mask(weight, opts.target_sparsity)

    def _values(self, weight, keep, mask: Const, role: Role, element_type: str,
                pool: KernelPool) -> tuple[Node, str]:
        """The decompression graph and a description of how non-zeros are stored."""
        opts = self.options
        dtype = numpy_dtype(element_type)
        if opts.palettize_nbits is not None:
            values = kept_values(weight, keep)
            k = 2**opts.palettize_nbits
            cluster = partial(palettize_rows, k=k, to_storage=partial(round_through, dtype=dtype))
            [(lut, indices)] = pool.map(cluster, [values[None, :].astype(np.float32)])
            lut_const = Const(lut.reshape(1, k, 1).astype(dtype), element_type)
            palettized = LutToDense(Const.packed(indices[0], uint_type(opts.palettize_nbits)), lut_const, 0)
            return SparseToDense(palettized, mask), f"{opts.palettize_nbits}-bit palettized"
        if opts.quantize_dtype is None:
            return SparseToDense(Const(kept_values(weight, keep), element_type), mask), element_type
        fmt = FORMATS[opts.quantize_dtype.value]
        if fmt.zero_point:
            return self._offset_codes(kept_values(weight, keep), fmt, mask, element_type), f"{fmt.name} (one scale)"
        shape = layout.channel_param_shape(weight.ndim, role.out_axis, weight.shape[role.out_axis])
        reduce_axes = tuple(a for a in range(weight.ndim) if a != role.out_axis)
        scale = masked_block_scales(weight, keep, fmt, reduce_axes, dtype)
        codes = kept_codes(weight, scale, fmt, keep)  # pruned positions' codes are dropped
        node = ShiftScale(
            SparseToDense(Const(codes, fmt.element_type), mask),
            Const(scale.reshape(shape), element_type),
            Const(np.zeros(shape, fmt.dtype), fmt.element_type),
            Const(np.zeros(shape, dtype), element_type),
        )  # zero point 0, so pruned positions (code 0) decode to exactly 0
        return node, f"{fmt.name} (scale per output channel)"

    @staticmethod
    def _offset_codes(values: np.ndarray, fmt, mask: Const, element_type: str) -> Node:
        scale = block_scales(values, fmt, (0,), numpy_dtype(element_type))
        return SparseToDense(dequantized(quantize(values, scale, fmt), scale.reshape(1), fmt, element_type), mask)
