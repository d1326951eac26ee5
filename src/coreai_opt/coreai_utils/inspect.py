"""``inspect_weights``: what weights a program holds and how each is stored."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import _ir
from ._dtypes import storage_bytes as dense_bytes
from ._encoding import Cast, Const, LutToDense, Node, ShiftScale, SparseToDense, describe, storage_bytes
from ._ir.decompress import expression_of
from ._ir.weights import stored_weights
from ._passes.runner import check_program


@dataclass(frozen=True)
class WeightInfo:
    """One weight of a program: identity, shape, consumers and storage."""

    name: str
    id: str
    shape: tuple[int, ...]
    element_type: str
    consumers: tuple[str, ...]
    storage: str  # "dense", "palettized 4-bit ...", "sparse ...", "quantized int8 ..."
    bytes: int  # bytes its constants occupy
    dense_bytes: int  # bytes it would take stored densely
    expression: str  # the decompression graph, compactly

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        row = asdict(self)
        row["shape"] = list(self.shape)
        row["consumers"] = list(self.consumers)
        return row


def _unwrap(node: Node) -> tuple[Node, list[str]]:
    """The core of a chain and the wrappers around it (per-channel scale, casts)."""
    extras = []
    while True:
        if isinstance(node, Cast):
            node = node.x
        elif isinstance(node, ShiftScale) and not isinstance(_codes(node), Const):
            extras.append("scaled per block" if any(s > 1 for s in node.scale.shape) else "scaled")
            node = node.data
        else:
            return node, extras


def _codes(node: Node) -> Node:
    """What a (possibly two-step) dequantization reads: the stored codes."""
    while isinstance(node, ShiftScale):
        node = node.data
    return node


def _quantized(node: ShiftScale) -> str:
    element = _codes(node).element_type
    blocks = int(np.prod(node.scale.shape))
    return f"quantized {element}, {blocks} scale{'s' if blocks > 1 else ''}"


def _palettized(node: LutToDense) -> str:
    bits = node.indices.element_type.removeprefix("ui")
    lut = node.lut
    lut_type = _codes(lut).element_type
    shape = lut.shape
    luts = int(np.prod(shape[:-2]))
    text = f"palettized {bits}-bit, {luts} LUT{'s' if luts > 1 else ''} of {shape[-2]}"
    if shape[-1] > 1:
        text += f" vectors of {shape[-1]}"
    return f"{text}, LUT {lut_type}"


def storage_of(node: Node, *, as_values: bool = False) -> str:
    """How an expression stores its weight (or, ``as_values``, a sparse weight's non-zeros), in words."""
    core, extras = _unwrap(node)
    if isinstance(core, Const):
        text = core.element_type if as_values else "dense"
    elif isinstance(core, LutToDense):
        text = _palettized(core)
    elif isinstance(core, SparseToDense):
        density = float(core.mask.array.astype(bool).mean()) if core.mask.array.size else 0.0
        text = f"sparse, density {density:.3f}, non-zeros {storage_of(core.values, as_values=True)}"
    elif isinstance(core, ShiftScale):
        text = _quantized(core)
    else:
        text = describe(core)
    return ", ".join([text, *extras])


def inspect_weights(coreai_program) -> list[WeightInfo]:
    """The weights of ``coreai_program``: every float constant read by a weight op and every
    decompression chain's output, with shape, consumers, storage and bytes."""
    check_program(coreai_program)
    module = _ir.mlir_module(coreai_program)
    blobs = _ir.BlobReader(module.operation, 0)
    rows = []
    try:
        for weight in stored_weights(module):
            node = expression_of(weight.value, blobs)
            if node is None:
                continue
            size = int(np.prod(weight.shape, dtype=np.int64))
            rows.append(WeightInfo(
                name=weight.name, id=weight.id, shape=weight.shape, element_type=weight.element_type,
                consumers=weight.consumers, storage=storage_of(node), bytes=storage_bytes(node),
                dense_bytes=dense_bytes(size, weight.element_type), expression=describe(node),
            ))
    finally:
        blobs.close()
    return rows
