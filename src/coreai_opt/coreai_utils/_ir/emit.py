"""Turn decompression expressions into Core AI ops and swap them in for constants.

Rewrites happen in two steps so a failure leaves the program as it was:
:meth:`ProgramEditor.insert` builds each replacement chain in front of its
constant (the old constant still feeds its users; the new ops are unused), and
:meth:`ProgramEditor.commit` then redirects the uses and erases the old
constants. If anything fails before ``commit``, :meth:`ProgramEditor.rollback`
erases every op built so far.
"""

from __future__ import annotations

from coreai._compiler import ir
from coreai._compiler.dialects import _coreai_ops_gen as ops

from .._encoding import Cast, Const, LutToDense, Node, ShiftScale, SparseToDense
from .constants import constant_attr, packed_constant_attr, tensor_type

_AXIS_TYPE = "si16"


class ProgramEditor:
    """Builds replacement chains for constants and commits or rolls them back."""

    def __init__(self, module: ir.Module) -> None:
        self._module = module
        self._created: list[ir.Operation] = []
        self._pending: list[tuple[ir.Operation, ir.Value]] = []

    def insert(self, constant_op: ir.Operation, node: Node) -> ir.Value:
        """Build ``node``'s ops just before ``constant_op``; return the new value (not yet used)."""
        with self._module.context, constant_op.location, ir.InsertionPoint(constant_op):
            value = self._build(node)
            expected = constant_op.results[0].type
            if value.type != expected:
                raise TypeError(f"replacement has type {value.type}, the weight has {expected}")
        self._pending.append((constant_op, value))
        return value

    def commit(self) -> None:
        """Redirect every use of each replaced constant and erase the constants."""
        for constant_op, value in self._pending:
            constant_op.results[0].replace_all_uses_with(value)
        for constant_op, _ in self._pending:
            constant_op.erase()
        self._pending.clear()
        self._created.clear()

    def rollback(self) -> None:
        """Erase every op built since the last commit, newest first."""
        for op in reversed(self._created):
            op.erase()
        self._created.clear()
        self._pending.clear()

    def _record(self, value: ir.Value) -> ir.Value:
        self._created.append(value.owner.operation)
        return value

    def _const(self, node: Const) -> ir.Value:
        if node.packed_shape is not None:
            attr = packed_constant_attr(node.data, node.packed_shape, node.element_type)
        else:
            attr = constant_attr(node.data, node.element_type)
        return self._record(ops.ConstantOp(value=attr).result)

    def _axis(self, axis: int) -> ir.Value:
        attr = ir.DenseElementsAttr.get_splat(
            tensor_type((), _AXIS_TYPE), ir.IntegerAttr.get(ir.IntegerType.get_signed(16), axis)
        )
        return self._record(ops.ConstantOp(value=attr).result)

    def _build(self, node: Node) -> ir.Value:
        if isinstance(node, Const):
            return self._const(node)
        if isinstance(node, LutToDense):
            indices = self._const(node.indices)
            lut = self._build(node.lut)
            axis = self._axis(node.axis)
            return self._record(ops.LutToDenseOp(indices, lut, axis).result)
        if isinstance(node, ShiftScale):
            data = self._build(node.data)
            scale, offset1, offset2 = (self._const(c) for c in (node.scale, node.offset1, node.offset2))
            return self._record(ops.BlockwiseShiftScaleOp(data, scale, offset1, offset2).result)
        if isinstance(node, SparseToDense):
            values = self._build(node.values)
            mask = self._const(node.mask)
            sparse = self._record(ops.BuildSparseWithBitmaskOp(values, mask).result)
            return self._record(ops.SparseWithBitmaskToDenseOp(sparse).result)
        if isinstance(node, Cast):
            source = self._build(node.x)
            return self._record(ops.CastOp(tensor_type(node.shape, node.element_type), source).result)
        raise TypeError(f"unknown decompression node {type(node).__name__}")
