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


@pytest.mark.parametrize("on_disk", [False, True], ids=["in-memory", "temporary-file"])
def test_streamed_reads_get_each_blob_while_the_module_is_still_being_written(small_net_fp32, on_disk, monkeypatch):
    import threading

    from coreai_opt.coreai_utils._ir import constants, iter_constants, mlir_module, resource_blobs

    module = mlir_module(small_net_fp32[0])
    sites = [s for s in iter_constants(module) if s.is_resource]
    expected = {constants._resource_key(s.op.attributes["value"]): read_constant(s.op, BlobReader(module.operation, 0))
                for s in sites}
    if on_disk:
        monkeypatch.setattr(constants, "_IN_MEMORY_LIMIT", -1)
    blobs = resource_blobs(module)
    assert [key for key, _ in blobs] == list(expected) and len(blobs) >= 2
    first = blobs[0][0]
    reader = BlobReader(module.operation, 10**12)
    reader.stream(blobs)
    read = threading.Event()
    arrive = BlobReader._arrive

    def arrive_and_wait(self, key, span):  # the writer waits until the first blob has been read
        arrive(self, key, span)
        if key == first:
            assert read.wait(30)

    monkeypatch.setattr(BlobReader, "_arrive", arrive_and_wait)
    seen = {}

    def read_all():
        for key, value in expected.items():
            seen[key] = (reader.read_array(key, value.shape, "f32").copy(), reader._finished)
            if key == first:
                read.set()

    thread = threading.Thread(target=read_all)
    thread.start()
    reader.load()
    thread.join(30)
    assert not reader.mispredicted
    assert seen[first][1] is False, "the first blob was read before the module was fully written"
    for key, value in expected.items():
        np.testing.assert_array_equal(seen[key][0], value)
    reader.close()


@pytest.mark.parametrize("streamed", [False, True])
def test_a_blob_is_let_go_of_after_its_expected_reads(small_net_fp32, streamed):
    """Each blob's place in the serialised copy is released after the reads announced for it (the
    arrays read keep their bytes); blobs nobody announced stay until ``close``."""
    import threading

    from coreai_opt.coreai_utils._ir import constant_loader, iter_constants, mlir_module, resource_blobs

    module = mlir_module(small_net_fp32[0])
    sites = [s for s in iter_constants(module) if s.is_resource]
    expected = [read_constant(s.op, BlobReader(module.operation, 0)) for s in sites]
    reader = BlobReader(module.operation, 0)
    if streamed:
        reader.stream(resource_blobs(module))
    announced, unannounced = sites[:-1], sites[-1]
    loads = [constant_loader(s.op, reader) for s in announced] + [constant_loader(announced[0].op, reader)]
    got = []
    # Streamed reads wait for the writer: they run on a thread of their own while it writes.
    reading = threading.Thread(target=lambda: got.extend(load() for load in loads))
    reading.start()
    reader.load()
    reading.join(30)
    # The first blob had two reads announced: it was still there for the second.
    for value, want in zip(got, [*expected[:-1], expected[0]], strict=True):
        np.testing.assert_array_equal(value, want)
    assert len(got) == len(loads)
    with pytest.raises(RuntimeError, match="released"):
        read_constant(announced[1].op, reader)
    np.testing.assert_array_equal(read_constant(unannounced.op, reader), expected[-1])
    reader.close()
    np.testing.assert_array_equal(read_constant(announced[1].op, reader), expected[1])  # serialised anew
    reader.close()


def test_a_misplaced_streamed_blob_is_reported(small_net_fp32):
    from coreai_opt.coreai_utils._ir import mlir_module, resource_blobs

    module = mlir_module(small_net_fp32[0])
    (first, first_size), (second, _), *_ = resource_blobs(module)
    reader = BlobReader(module.operation, 0)
    reader.stream([(second, first_size)])  # claims the first blob written is the second one
    reader.load()
    assert reader.mispredicted
    assert reader._span(second) == reader._spans[second] != reader._arrived[second]  # then the real place
    reader.close()


def test_readers_waiting_for_a_stream_that_fails_get_an_error():
    import threading

    class Failing:
        def write_bytecode(self, sink):
            sink.write(b"\0" * 3)
            raise OSError("disk full")

    reader = BlobReader(Failing(), 0)
    reader.stream([("resource_1", 8)])
    errors = []

    def read():
        try:
            reader.read_array("resource_1", (2,), "f32")
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=read)
    thread.start()
    with pytest.raises(OSError, match="disk full"):
        reader.load()
    thread.join(30)
    assert not thread.is_alive() and len(errors) == 1 and "could not be serialised" in str(errors[0])


def test_a_closed_reader_reads_again_by_serialising_anew(small_net_fp32):
    from coreai_opt.coreai_utils._ir import iter_constants, mlir_module, resource_blobs

    module = mlir_module(small_net_fp32[0])
    site = next(s for s in iter_constants(module) if s.is_resource)
    reader = BlobReader(module.operation, 0)
    reader.stream(resource_blobs(module))
    reader.load()
    before = read_constant(site.op, reader).copy()
    reader.close()
    np.testing.assert_array_equal(read_constant(site.op, reader), before)  # no wait for a stream that is over
    reader.close()
