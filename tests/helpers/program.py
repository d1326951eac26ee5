"""Look inside programs: decoded weights by consumer, asset sizes, runtime outputs."""

from __future__ import annotations

import pathlib

import numpy as np

from coreai_opt.coreai_utils._encoding import decode
from coreai_opt.coreai_utils._ir import BlobReader, mlir_module
from coreai_opt.coreai_utils._ir.decompress import expression_of
from coreai_opt.coreai_utils._ir.signature import graph_outputs
from coreai_opt.runtime import run_asset


def _walk(block):
    for op in block.operations:
        yield op
        for region in op.regions:
            for inner in region.blocks:
                yield from _walk(inner)


def weight_expressions(program) -> dict[str, list]:
    """Expressions of the weights feeding each weight op kind, in program order.

    Keys: ``"gather_nd"``, ``"conv2d"``, ``"matmul"`` (the matmul's ``y`` operand,
    looked up through a transpose, so a linear weight comes back untransposed).
    """
    module = mlir_module(program)
    blobs = BlobReader(module.operation, 0)
    found: dict[str, list] = {"gather_nd": [], "conv2d": [], "matmul": []}
    try:
        for op in _walk(module.body):
            name = op.name
            if name == "coreai.gather_nd":
                found["gather_nd"].append(expression_of(op.operands[0], blobs))
            elif name == "coreai.conv2d":
                found["conv2d"].append(expression_of(op.operands[1], blobs))
            elif name.endswith("batch_matmul"):
                value = op.operands[1]
                owner = value.owner
                if not isinstance(owner, type(module.body)) and owner.name == "coreai.transpose":
                    value = owner.operands[0]
                found["matmul"].append(expression_of(value, blobs))
    finally:
        blobs.close()
    return found


def decoded_small_net_weights(program) -> dict[str, np.ndarray]:
    """The embedding, linear and conv weights of a ``small_net`` program, decoded in numpy."""
    expressions = weight_expressions(program)
    return {
        "emb": decode(expressions["gather_nd"][0]),
        "lin": decode(expressions["matmul"][0]),
        "conv": decode(expressions["conv2d"][0]),
    }


def asset_bytes(path: pathlib.Path) -> int:
    """Total size of the files of an asset directory."""
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


def save_and_run(program, inputs: dict[str, np.ndarray], directory: pathlib.Path, name: str = "model"):
    """Save ``program`` as ``<directory>/<name>.aimodel``, run it in the runtime; (outputs, asset bytes)."""
    path = pathlib.Path(directory) / f"{name}.aimodel"
    program.save_asset(path)
    outputs = run_asset(path, inputs)
    names = [signature.name for signature in graph_outputs(mlir_module(program), "main")]
    return [outputs[name] for name in names], asset_bytes(path)


def fingerprint(program) -> tuple[str, list[tuple[str, str, bytes]]]:
    """The IR text and every constant's element type and bytes: equal fingerprints, equal programs."""
    from coreai_opt.coreai_utils._ir import iter_constants, read_constant

    module = mlir_module(program)
    blobs = BlobReader(module.operation, 0)
    try:
        constants = [(site.id, site.element_type, read_constant(site.op, blobs).tobytes())
                     for site in iter_constants(module)]
    finally:
        blobs.close()
    return str(program), constants
