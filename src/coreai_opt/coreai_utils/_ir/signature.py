"""Named inputs of a program's graphs (what a caller must feed the runtime)."""

from __future__ import annotations

from dataclasses import dataclass

from coreai._compiler import ir


@dataclass(frozen=True)
class TensorSignature:
    """One named graph input or output."""

    name: str
    shape: tuple[int, ...]
    element_type: str


def _graphs(module: ir.Module) -> dict[str, ir.Operation]:
    found: dict[str, ir.Operation] = {}

    def visit(block: ir.Block) -> None:
        for op in block.operations:
            if op.name == "coreai.graph":
                found[ir.StringAttr(op.attributes["sym_name"]).value] = op.operation
            else:
                for region in op.regions:
                    for inner in region.blocks:
                        visit(inner)

    visit(module.body)
    return found


def graph_names(module: ir.Module) -> list[str]:
    """Names of every ``coreai.graph`` in the module."""
    return list(_graphs(module))


def _graph(module: ir.Module, function: str) -> ir.Operation:
    graphs = _graphs(module)
    if function not in graphs:
        raise KeyError(f"no graph named {function!r}; the program has {', '.join(graphs) or 'none'}")
    return graphs[function]


def _signatures(graph: ir.Operation, attrs_key: str, types: list[ir.Type], prefix: str) -> list[TensorSignature]:
    attrs = ir.ArrayAttr(graph.attributes[attrs_key]) if attrs_key in graph.attributes else None
    signatures = []
    for index, value_type in enumerate(types):
        name = f"{prefix}_{index}"
        if attrs is not None:
            entry = ir.DictAttr(attrs[index])
            if "coreai.name" in entry:
                name = ir.StringAttr(entry["coreai.name"]).value
        ttype = ir.RankedTensorType(value_type)
        signatures.append(TensorSignature(name, tuple(ttype.shape), str(ttype.element_type)))
    return signatures


def graph_inputs(module: ir.Module, function: str) -> list[TensorSignature]:
    """The named tensor inputs of graph ``function``, in order."""
    graph = _graph(module, function)
    types = [argument.type for argument in graph.regions[0].blocks[0].arguments]
    return _signatures(graph, "arg_attrs", types, "input")


def graph_outputs(module: ir.Module, function: str) -> list[TensorSignature]:
    """The named tensor outputs of graph ``function``, in order."""
    graph = _graph(module, function)
    function_type = ir.FunctionType(ir.TypeAttr(graph.attributes["function_type"]).value)
    return _signatures(graph, "res_attrs", list(function_type.results), "output")
