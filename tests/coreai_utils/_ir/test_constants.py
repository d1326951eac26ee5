"""Constants round-trip between numpy and the IR for every element type the passes write."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from coreai._compiler import ir
from coreai._compiler.dialects import _coreai_ops_gen as ops
from coreai.authoring import Module
from coreai_opt.coreai_utils._ir.constants import BlobReader, constant_attr, read_constant

CASES = [
    ("f32", np.float32),
    ("f16", np.float16),
    ("bf16", ml_dtypes.bfloat16),
    ("si8", np.int8),
    ("ui8", np.uint8),
    ("f8E4M3FN", ml_dtypes.float8_e4m3fn),
    ("f8E5M2", ml_dtypes.float8_e5m2),
    ("si16", np.int16),
] + [(f"ui{bits}", np.uint8) for bits in (1, 2, 3, 4, 5, 6, 7)]


def _values(element_type: str, dtype, shape, rng) -> np.ndarray:
    if element_type.startswith("ui") and element_type != "ui8":
        return rng.integers(0, 2 ** int(element_type[2:]), shape).astype(np.uint8)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("element_type,dtype", CASES)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (1, 1)])
@pytest.mark.parametrize("on_disk", [False, True], ids=["in-memory", "temporary-file"])
def test_constant_round_trips_through_the_ir(element_type, dtype, shape, on_disk, monkeypatch):
    from coreai_opt.coreai_utils._ir import constants

    rng = np.random.default_rng(len(shape) * 31 + len(element_type))
    values = _values(element_type, dtype, shape, rng)
    module = Module.create()._mlir_module
    with module.context, ir.Location.unknown(), ir.InsertionPoint(module.body):
        op = ops.ConstantOp(value=constant_attr(values, element_type)).operation
    assert str(ir.RankedTensorType(op.results[0].type).element_type) == element_type
    if on_disk:  # a mapping of the blob in the temporary file
        monkeypatch.setattr(constants, "_IN_MEMORY_LIMIT", -1)
    reader = BlobReader(module.operation, 0)
    try:
        back = read_constant(op, reader)
    finally:
        reader.close()
    assert back.shape == values.shape
    np.testing.assert_array_equal(back.view(np.uint8), np.ascontiguousarray(values).view(np.uint8))  # after close
    blob = ir.DenseResourceElementsAttr.isinstance(op.attributes["value"])  # (1, 1) is written inline
    if blob and not constants.sub_byte_bits(element_type):  # a view of the serialised blob, never written
        assert not back.flags.owndata and not back.flags.writeable


def test_equal_elements_become_a_splat():
    module = Module.create()._mlir_module
    with module.context, ir.Location.unknown(), ir.InsertionPoint(module.body):
        attr = constant_attr(np.zeros((4, 4), np.float32), "f32")
    assert ir.DenseElementsAttr.isinstance(attr) and ir.DenseElementsAttr(attr).is_splat


@pytest.mark.parametrize("values,splat", [
    (np.zeros(2000, np.float32), True),
    (np.full(2000, np.nan, np.float32), True),
    (np.array([0.0] * 1999 + [-0.0], np.float32), False),  # equal values, different bits: stored dense
    (np.array([1.0] * 1999 + [2.0], np.float32), False),
])
def test_a_constant_is_reported_as_a_splat_exactly_when_it_is_written_as_one(values, splat):
    from coreai_opt.coreai_utils._encoding import Const

    module = Module.create()._mlir_module
    with module.context, ir.Location.unknown(), ir.InsertionPoint(module.body):
        attr = constant_attr(values, "f32")
    written = ir.DenseElementsAttr.isinstance(attr) and ir.DenseElementsAttr(attr).is_splat
    assert written == splat == Const(values, "f32").is_splat


def test_inline_dense_constants_are_read(small_net_fp32):
    from coreai_opt.coreai_utils._ir import iter_constants, mlir_module

    module = mlir_module(small_net_fp32[0])
    reader = BlobReader(module.operation, 0)
    inline = [s for s in iter_constants(module) if not s.is_resource]
    assert inline, "the converted net has inline constants (biases, shapes)"
    for site in inline:
        value = read_constant(site.op, reader)
        assert value.shape == site.shape
    reader.close()


def test_large_modules_are_read_from_a_temporary_file(small_net_fp32, monkeypatch):
    from coreai_opt.coreai_utils._ir import constants, iter_constants, mlir_module

    module = mlir_module(small_net_fp32[0])
    sites = [s for s in iter_constants(module) if s.is_resource]
    in_memory = BlobReader(module.operation, 0)
    monkeypatch.setattr(constants, "_IN_MEMORY_LIMIT", -1)
    on_disk = BlobReader(module.operation, 10**12)
    for site in sites:
        np.testing.assert_array_equal(read_constant(site.op, in_memory), read_constant(site.op, on_disk))
    in_memory.close()
    on_disk.close()


def test_concurrent_first_reads_serialise_the_module_once(small_net_fp32, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from coreai_opt.coreai_utils._ir import constants, iter_constants, mlir_module

    module = mlir_module(small_net_fp32[0])
    sites = [s for s in iter_constants(module) if s.is_resource]
    expected = {s.name: read_constant(s.op, BlobReader(module.operation, 0)) for s in sites}
    monkeypatch.setattr(constants, "_IN_MEMORY_LIMIT", -1)
    serialised = []
    real = BlobReader._serialise
    monkeypatch.setattr(BlobReader, "_serialise", lambda self: (serialised.append(1), real(self)))
    reader = BlobReader(module.operation, 10**12)
    keys = {s.name: constants._resource_key(s.op.attributes["value"]) for s in sites}
    shapes = {s.name: (tuple(expected[s.name].shape), constants.element_type_name(s.op.result.type)) for s in sites}
    with ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(lambda n: (n, constants._blob_to_array(reader.read(keys[n]), *shapes[n])), list(keys) * 4))
    assert serialised == [1]
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
    reader.close()
