"""Weights as a program stores them now: plain constants or decompression chains."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from coreai._compiler import ir

from .._dtypes import FLOAT_TYPES
from .constants import element_type_name
from .decompress import DECOMPRESSION_OPS
from .graph import WEIGHT_OPS, display_name


@dataclass
class StoredWeight:
    """A value that feeds the model as a weight, and where it comes from."""

    value: ir.Value
    graph: str
    ordinal: int
    name: str
    shape: tuple[int, ...]
    element_type: str
    consumers: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.graph}#w{self.ordinal}"


def _defining(value: ir.Value) -> ir.Operation | None:
    owner = value.owner
    return None if isinstance(owner, ir.Block) else owner.operation


def _is_weight_root(value: ir.Value, user: ir.Operation) -> bool:
    op = _defining(value)
    if op is None or not ir.RankedTensorType.isinstance(value.type):
        return False
    if op.name in DECOMPRESSION_OPS:
        return True
    return op.name == "coreai.constant" and user.name in WEIGHT_OPS and element_type_name(value.type) in FLOAT_TYPES


def stored_weights(module: ir.Module) -> Iterator[StoredWeight]:
    """Each weight value once, graph by graph: the outputs of decompression chains and the
    float constants read directly by weight ops."""
    seen: set = set()

    def visit(block: ir.Block, graph: str, counter: list[int]) -> Iterator[StoredWeight]:
        for op in block.operations:
            operation = op.operation
            if operation.name == "coreai.graph":
                name = ir.StringAttr(operation.attributes["sym_name"]).value
                for region in operation.regions:
                    for inner in region.blocks:
                        yield from visit(inner, name, [0])
                continue
            if operation.name not in DECOMPRESSION_OPS and operation.name != "coreai.constant":
                for value in operation.operands:
                    if value in seen or not _is_weight_root(value, operation):
                        continue
                    seen.add(value)
                    ordinal = counter[0]
                    counter[0] += 1
                    ttype = ir.RankedTensorType(value.type)
                    yield StoredWeight(
                        value=value, graph=graph, ordinal=ordinal,
                        name=display_name(_defining(value), graph, ordinal),
                        shape=tuple(ttype.shape), element_type=str(ttype.element_type),
                        consumers=tuple(use.owner.name for use in value.uses),
                    )
            for region in operation.regions:
                for inner in region.blocks:
                    yield from visit(inner, graph, counter)

    yield from visit(module.body, "module", [0])
