"""Read decompression chains back out of a program as ``_encoding`` expressions.

The inverse of :mod:`.emit`: follow a value up through ``lut_to_dense``,
``blockwise_shift_scale``, ``sparse_with_bitmask_to_dense`` /
``build_sparse_with_bitmask`` and ``cast`` to the constants at the leaves.
"""

from __future__ import annotations

from coreai._compiler import ir

from .._encoding import Cast, Const, LutToDense, Node, ShiftScale, SparseToDense
from .constants import BlobReader, element_type_name, read_constant

DECOMPRESSION_OPS = frozenset({
    "coreai.lut_to_dense",
    "coreai.blockwise_shift_scale",
    "coreai.sparse_with_bitmask_to_dense",
    "coreai.build_sparse_with_bitmask",
    "coreai.cast",
})


def _defining_op(value: ir.Value) -> ir.Operation | None:
    owner = value.owner
    return None if isinstance(owner, ir.Block) else owner.operation


def expression_of(value: ir.Value, blobs: BlobReader) -> Node | None:
    """The expression computing ``value`` from constants, or None if it is not one."""
    op = _defining_op(value)
    if op is None:
        return None
    if op.name == "coreai.constant":
        if not ir.RankedTensorType.isinstance(value.type):
            return None
        return Const(read_constant(op, blobs), element_type_name(value.type))
    if op.name not in DECOMPRESSION_OPS:
        return None
    parts = [expression_of(operand, blobs) for operand in op.operands]
    if any(part is None for part in parts):
        return None
    if op.name == "coreai.lut_to_dense":
        indices, lut, axis = parts
        return LutToDense(indices, lut, int(axis.array.reshape(-1)[0]))
    if op.name == "coreai.blockwise_shift_scale":
        return ShiftScale(*parts)
    if op.name == "coreai.cast":
        return Cast(parts[0], element_type_name(value.type))
    if op.name == "coreai.sparse_with_bitmask_to_dense":
        return parts[0]
    if op.name == "coreai.build_sparse_with_bitmask":
        return SparseToDense(parts[0], parts[1])
    return None
