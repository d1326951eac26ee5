"""Decompression graphs described in numpy, independent of the IR.

A compressed weight is a small expression over constants, built from the Core AI
decompression ops. Passes build these expressions; the IR adapter turns them into
ops; :func:`decode` evaluates them in numpy with the ops' documented semantics,
so the report and the tests know exactly what the runtime will compute.

- ``Const``: a constant tensor of a given element type (``"ui4"``, ``"si8"``, ``"f16"`` ...).
- ``LutToDense``: ``coreai.lut_to_dense(indices, lut, axis)``.
- ``ShiftScale``: ``coreai.blockwise_shift_scale(data, scale, offset1, offset2)``.
- ``SparseToDense``: ``coreai.build_sparse_with_bitmask`` then ``coreai.sparse_with_bitmask_to_dense``.
- ``Cast``: ``coreai.cast``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ._dtypes import numpy_dtype, storage_bytes as _dense_bytes, sub_byte_bits
from ._kernels.pack import pack_bits, unpack_bits

def all_equal_bits(flat: np.ndarray) -> bool:
    """Whether every element of a non-empty 1-D array has the same bit pattern (what makes a splat)."""
    raw = np.ascontiguousarray(flat).view(np.uint8).reshape(flat.size, -1)
    sample = raw[:: max(1, flat.size // 1024)]  # real weights differ at once: skip the full scan
    return bool((sample == raw[:1]).all() and (raw == raw[:1]).all())


@dataclass(frozen=True, eq=False)
class Const:
    """A constant tensor of ``element_type``.

    ``data`` holds the values (sub-byte types as uint8), or, when ``packed_shape``
    is set, the bit stream of a sub-byte tensor of that shape already packed the
    way Core AI stores it (large index tensors are kept packed to save memory).
    """

    data: np.ndarray
    element_type: str
    packed_shape: tuple[int, ...] | None = None

    @classmethod
    def packed(cls, values: np.ndarray, element_type: str) -> Const:
        """A sub-byte constant stored packed (``element_type`` like ``ui4``)."""
        bits = sub_byte_bits(element_type)
        if not bits:
            return cls(values, element_type)
        return cls(pack_bits(values, bits), element_type, tuple(values.shape))

    @property
    def array(self) -> np.ndarray:
        """The values (unpacked if needed)."""
        if self.packed_shape is None:
            return self.data
        return unpack_bits(self.data, sub_byte_bits(self.element_type), self.packed_shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.packed_shape if self.packed_shape is not None else tuple(self.data.shape)

    @property
    def is_splat(self) -> bool:
        """Whether all elements are equal (stored as a single value). Packed constants never are."""
        if self.packed_shape is not None:
            return False
        flat = self.data.reshape(-1)
        return flat.size <= 1 or all_equal_bits(flat)

    @property
    def storage_bytes(self) -> int:
        """Bytes this constant adds to an asset."""
        if self.packed_shape is not None:
            return int(self.data.size)
        count = 1 if self.is_splat else self.data.size
        return _dense_bytes(count, self.element_type)


@dataclass(frozen=True, eq=False)
class LutToDense:
    """Look up each index in its block's LUT; vectors expand along ``axis``."""

    indices: Const
    lut: Node
    axis: int

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.indices.shape)
        shape[self.axis] *= self.lut.shape[-1]
        return tuple(shape)

    @property
    def element_type(self) -> str:
        return self.lut.element_type


@dataclass(frozen=True, eq=False)
class ShiftScale:
    """``scale * (data - offset1) + offset2``, parameters broadcast by blocks."""

    data: Node
    scale: Const
    offset1: Const
    offset2: Const

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def element_type(self) -> str:
        return self.offset2.element_type


@dataclass(frozen=True, eq=False)
class SparseToDense:
    """A dense tensor holding ``values`` where ``mask`` is 1 (row-major order), else 0."""

    values: Node
    mask: Const

    @property
    def shape(self) -> tuple[int, ...]:
        return self.mask.shape

    @property
    def element_type(self) -> str:
        return self.values.element_type


@dataclass(frozen=True, eq=False)
class Cast:
    """``coreai.cast`` to ``element_type`` (found in programs compressed by other tools)."""

    x: Node
    element_type: str

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape


Node = Const | LutToDense | ShiftScale | SparseToDense | Cast


def constants(node: Node) -> Iterator[Const]:
    """Every constant the expression stores, each once."""
    if isinstance(node, Const):
        yield node
    elif isinstance(node, LutToDense):
        yield node.indices
        yield from constants(node.lut)
    elif isinstance(node, ShiftScale):
        yield from constants(node.data)
        yield node.scale
        yield node.offset1
        yield node.offset2
    elif isinstance(node, Cast):
        yield from constants(node.x)
    else:
        yield from constants(node.values)
        yield node.mask


def storage_bytes(node: Node) -> int:
    """Bytes the expression's constants occupy in an asset."""
    return sum(c.storage_bytes for c in constants(node))


def describe(node: Node) -> str:
    """A compact one-line rendering, e.g. ``lut_to_dense(ui4[384x384], f32[1x1x16x1])``."""
    if isinstance(node, Const):
        dims = "x".join(str(s) for s in node.shape) or "scalar"
        return f"{node.element_type}[{dims}]"
    if isinstance(node, LutToDense):
        return f"lut_to_dense({describe(node.indices)}, {describe(node.lut)})"
    if isinstance(node, ShiftScale):
        return f"shift_scale({describe(node.data)}, scale {describe(node.scale)})"
    if isinstance(node, Cast):
        return f"cast({describe(node.x)} to {node.element_type})"
    return f"sparse({describe(node.values)}, mask {describe(node.mask)})"


def _block_view(array: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """View ``array`` as (b0, a0/b0, b1, a1/b1, ...) for block-wise broadcasting."""
    shape: list[int] = []
    for size, count in zip(array.shape, blocks, strict=True):
        shape += [count, size // count]
    return array.reshape(shape)


def _decode_lut(node: LutToDense) -> np.ndarray:
    indices = node.indices.array.astype(np.intp)
    lut = decode(node.lut)
    rank = indices.ndim
    blocks = lut.shape[:rank]
    n_entries, vector = lut.shape[rank], lut.shape[rank + 1]
    # Each index selects lut[block(p), index, :]; gather on a flattened table.
    block_ids = np.zeros(indices.shape, dtype=np.intp)
    stride = 1
    for axis in range(rank - 1, -1, -1):
        per_block = indices.shape[axis] // blocks[axis]
        ids = np.arange(indices.shape[axis]) // per_block
        block_ids = block_ids + (ids * stride).reshape([-1 if a == axis else 1 for a in range(rank)])
        stride *= blocks[axis]
    table = lut.reshape(-1, n_entries, vector)
    values = table[block_ids, indices]  # shape indices.shape + (vector,)
    values = np.moveaxis(values, -1, node.axis + 1)
    return values.reshape(node.shape)


def _decode_shift_scale(node: ShiftScale) -> np.ndarray:
    data = decode(node.data).astype(np.float32)
    blocks = node.scale.shape
    out_dtype = numpy_dtype(node.element_type)
    scale = node.scale.array.astype(np.float32)
    offset1 = node.offset1.array.astype(np.float32)
    offset2 = node.offset2.array.astype(np.float32)
    view = _block_view(data, blocks)
    expand = tuple(s for b in blocks for s in (b, 1))
    result = scale.reshape(expand) * (view - offset1.reshape(expand)) + offset2.reshape(expand)
    return result.reshape(node.shape).astype(out_dtype)


def decode(node: Node) -> np.ndarray:
    """Evaluate the expression in numpy as the Core AI runtime would."""
    if isinstance(node, Const):
        return node.array.astype(numpy_dtype(node.element_type), copy=False)
    if isinstance(node, LutToDense):
        return _decode_lut(node)
    if isinstance(node, ShiftScale):
        return _decode_shift_scale(node)
    if isinstance(node, Cast):
        return decode(node.x).astype(numpy_dtype(node.element_type))
    values = decode(node.values).reshape(-1)
    dense = np.zeros(node.shape, dtype=values.dtype)
    dense[node.mask.array.astype(bool)] = values
    return dense
