"""Read ``coreai.constant`` values into numpy and build constant attributes from numpy.

Element types are named as MLIR prints them (``f32``, ``f16``, ``bf16``, ``si8``,
``ui4``, ``f8E4M3FN`` ...). Sub-byte integers are stored as a little-endian bit
stream: element ``i`` occupies bits ``[i*n, (i+1)*n)`` counting from the least
significant bit of byte 0, which is how the Core AI runtime unpacks them.
"""

from __future__ import annotations

import itertools
import mmap
import re
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from coreai._compiler import ir

from .._dtypes import numpy_dtype, storage_bytes, sub_byte_bits
from .._encoding import all_equal_bits
from .._kernels.pack import pack_bits, unpack_bits
from .bytecode import BlobSpan, FileView, WrittenChunks, blob_spans

_RESOURCE_KEY = re.compile(r"dense_resource<([^>]+)>")
#: Modules whose weights exceed this many bytes are serialised to a temp file, not memory.
_IN_MEMORY_LIMIT = 256 * 2**20
_names = itertools.count()


def element_type_name(tensor_type: ir.Type) -> str:
    """The printed element type of a ranked tensor type, e.g. ``'f32'``."""
    return str(ir.RankedTensorType(tensor_type).element_type)


def _mlir_element_type(element_type: str) -> ir.Type:
    bits = sub_byte_bits(element_type)
    if bits:
        return ir.IntegerType.get_unsigned(bits)
    return ir.Type.parse(element_type)


def tensor_type(shape: tuple[int, ...], element_type: str) -> ir.RankedTensorType:
    """``tensor<shape x element_type>`` in the current context."""
    return ir.RankedTensorType.get(list(shape), _mlir_element_type(element_type))


class BlobReader:
    """Reads ``dense_resource`` blobs of one module, serialising it once.

    Reads are thread-safe; the one serialisation touches the IR, so ``load`` it on
    the thread that owns the module before handing reads to other threads, or call
    ``stream`` first: then reads on other threads wait for ``load`` to write their
    blob and go on as soon as it is written.
    """

    def __init__(self, module_op: ir.Operation, weight_bytes: int) -> None:
        self._module_op = module_op
        self._weight_bytes = weight_bytes
        self._spans: dict | None = None
        self._buffer: WrittenChunks | None = None
        self._file: Any = None
        self._lock = threading.Lock()
        self._expected: list[tuple[str, int]] = []
        self._arrived: dict[str, BlobSpan] = {}
        self._news = threading.Condition()
        self._finished = False
        self.mispredicted = False
        self._reads_left: dict[str, int] = {}  # blobs to let go of after their expected reads
        self._unneeded: list[BlobSpan] = []  # ... read before the writer finished: let go of then
        self._reads_lock = threading.Lock()

    def stream(self, expected: list[tuple[str, int]]) -> None:
        """Let reads of the ``expected`` blobs ((key, bytes) in the order the module lists them)
        proceed while ``load`` writes the module: the writer is assumed to write blobs in that
        order, one write each, which is checked once all is written (``mispredicted``: a read may
        have been given the wrong bytes). Call before other threads read."""
        self._expected = [(key, size) for key, size in expected if size > 0]

    def expect_read(self, key: str) -> None:
        """Count one coming ``read_array`` of ``key``: after the last one counted, the in-memory
        serialised copy lets go of the blob (its memory is freed with the arrays read from it, on
        the reading thread, instead of all at once in ``close``)."""
        with self._reads_lock:
            self._reads_left[key] = self._reads_left.get(key, 0) + 1

    def load(self) -> None:
        """Serialise the module now, if not done yet."""
        with self._lock:
            if self._spans is None and not self._finished:
                self._serialise()

    def _serialise(self) -> None:
        try:
            if self._weight_bytes > _IN_MEMORY_LIMIT:
                # Large modules go to disk and are read blob by blob, so the serialised
                # copy never sits in memory next to the module itself.
                self._file = tempfile.TemporaryFile(prefix="coreai_opt_")
                sink = self._file
            else:
                self._buffer = sink = WrittenChunks()
            self._module_op.write_bytecode(_Announcer(sink, self._expected, self._arrive) if self._expected else sink)
            if self._file is not None:
                self._file.flush()
            spans = blob_spans(self._buffer if self._file is None else FileView(self._file.fileno()))
            self.mispredicted = any(spans.get(key) != span for key, span in self._arrived.items())
            self._spans = spans
        finally:
            with self._news:
                self._finished = True
                self._news.notify_all()
        self._release_unneeded()

    def _arrive(self, key: str, span: BlobSpan) -> None:
        with self._news:
            self._arrived[key] = span
            self._news.notify_all()

    def read(self, key: str) -> bytes | memoryview:
        """The raw bytes of the blob named ``key``."""
        span = self._span(key)
        if self._buffer is not None:
            return self._buffer.view(span.offset, span.size)
        return FileView(self._file.fileno())[span.offset : span.offset + span.size]

    def _span(self, key: str) -> BlobSpan:
        if not self._expected:
            self.load()
        with self._news:
            while not self._finished and key not in self._arrived:
                self._news.wait()
            if not self._finished:
                return self._arrived[key]  # as written: checked when all is written
        if self._spans is None:
            raise RuntimeError("the module could not be serialised to read its weights")
        try:
            return self._spans[key]
        except KeyError:
            raise KeyError(f"resource blob {key!r} not found in the module") from None

    def read_array(self, key: str, shape: tuple[int, ...], element_type: str) -> np.ndarray:
        """The blob named ``key`` as a read-only array: a view of the serialised bytes where the
        blob holds whole elements (no copy; from the temp file, a mapping of just this blob, so
        its pages are released with the array), else a new array (sub-byte types are unpacked)."""
        span = self._span(key)
        dtype = numpy_dtype(element_type)
        count = int(np.prod(shape, dtype=np.int64))
        if sub_byte_bits(element_type) or span.size < count * dtype.itemsize:
            return _blob_to_array(self.read(key), shape, element_type)
        if self._file is None:
            source, offset = self._buffer.view(span.offset, span.size), 0
        else:
            source, offset = _mapped(self._file.fileno(), span.offset, span.size)
            if source is None:
                return _blob_to_array(self.read(key), shape, element_type)
        array = np.frombuffer(source, dtype=dtype, count=count, offset=offset).reshape(shape)
        self._read_done(key, span)
        return array

    def _read_done(self, key: str, span: BlobSpan) -> None:
        """After the last expected read of ``key``: let go of its bytes (once the writer is done:
        reading the layout may still look at them)."""
        with self._reads_lock:
            left = self._reads_left.get(key)
            if left is None:
                return
            if left > 1:
                self._reads_left[key] = left - 1
                return
            del self._reads_left[key]
            self._unneeded.append(span)
        if self._spans is not None:
            self._release_unneeded()

    def _release_unneeded(self) -> None:
        with self._reads_lock:
            spans, self._unneeded = self._unneeded, []
            buffer = self._buffer
        if buffer is not None and not self.mispredicted:
            for span in spans:
                buffer.release(span.offset, span.size)

    def close(self) -> None:
        """Release the serialised copy (a later read serialises the module again)."""
        self._buffer = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._spans = None
        self._expected, self._arrived, self._finished = [], {}, False
        with self._reads_lock:
            self._reads_left, self._unneeded = {}, []


class _Announcer:
    """A bytecode sink that forwards every write and announces each expected blob as it is written:
    the next expected one, when a write has exactly its size (a blob is one write)."""

    def __init__(self, sink, expected: list[tuple[str, int]], arrive: Callable[[str, BlobSpan], None]) -> None:
        self._sink, self._expected, self._arrive = sink, expected, arrive
        self._next = 0
        self._offset = 0

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        written = self._sink.write(data)
        offset, self._offset = self._offset, self._offset + size
        if self._next < len(self._expected) and size == self._expected[self._next][1]:
            self.flush()  # readable where the reader looks (the temp file) before it is announced
            self._arrive(self._expected[self._next][0], BlobSpan(offset, size))
            self._next += 1
        return written

    def flush(self) -> None:
        if hasattr(self._sink, "flush"):
            self._sink.flush()


def _mapped(fd: int, offset: int, size: int) -> tuple[mmap.mmap | None, int]:
    """A read-only mapping of the pages holding ``size`` bytes at ``offset`` of a file, and where
    those bytes start in it; (None, 0) where the file cannot be mapped."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        return mmap.mmap(fd, offset + size - start, offset=start, access=mmap.ACCESS_READ), offset - start
    except (OSError, ValueError):
        return None, 0


def _blob_to_array(raw: bytes | memoryview, shape: tuple[int, ...], element_type: str) -> np.ndarray:
    bits = sub_byte_bits(element_type)
    if bits:
        return unpack_bits(np.frombuffer(raw, np.uint8), bits, shape)
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(raw, dtype=numpy_dtype(element_type), count=count).reshape(shape).copy()


def _resource_key(attr: ir.Attribute) -> str:
    match = _RESOURCE_KEY.search(str(attr))
    if match is None:
        raise ValueError(f"cannot find the resource key of {attr}")
    return match.group(1)


def constant_loader(op: ir.Operation, blobs: BlobReader) -> Callable[[], np.ndarray]:
    """A function returning the constant's value that touches no IR, so it can run on any thread.

    Inline values are read now (they are small); blob values are read when called (``load``
    or ``stream`` the reader on the module's thread first).
    """
    attr = op.attributes["value"]
    if not ir.DenseResourceElementsAttr.isinstance(attr):
        value = read_constant(op, blobs)
        return lambda: value
    ttype = ir.RankedTensorType(attr.type)
    shape, element_type = tuple(ttype.shape), str(ttype.element_type)
    key = _resource_key(attr)
    blobs.expect_read(key)
    return lambda: blobs.read_array(key, shape, element_type)


def read_constant(op: ir.Operation, blobs: BlobReader) -> np.ndarray:
    """The value of a ``coreai.constant`` as a numpy array (read-only where it views the serialised blob)."""
    attr = op.attributes["value"]
    ttype = ir.RankedTensorType(attr.type)
    shape = tuple(ttype.shape)
    element_type = str(ttype.element_type)
    dtype = numpy_dtype(element_type)
    if ir.DenseResourceElementsAttr.isinstance(attr):
        return blobs.read_array(_resource_key(attr), shape, element_type)
    dense = ir.DenseElementsAttr(attr)
    if dense.is_splat:
        return np.full(shape, _scalar(dense.get_splat_value()), dtype=dtype)
    try:
        return np.array(dense, copy=True).astype(dtype, copy=False).reshape(shape)
    except (TypeError, ValueError, RuntimeError):
        return _parse_dense_text(str(attr), shape, dtype)


def _scalar(attr: ir.Attribute) -> float | int:
    if ir.FloatAttr.isinstance(attr):
        return ir.FloatAttr(attr).value
    if ir.IntegerAttr.isinstance(attr):
        return ir.IntegerAttr(attr).value
    if ir.BoolAttr.isinstance(attr):
        return ir.BoolAttr(attr).value
    raise TypeError(f"unsupported splat value {attr}")


def _parse_dense_text(text: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Fallback for inline element types the buffer protocol does not expose (e.g. bf16)."""
    body = text[text.index("<") + 1 : text.rindex(">")]
    if body.startswith('"0x'):
        raw = bytes.fromhex(body[3:-1])
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    numbers = re.findall(r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan|0x[0-9A-Fa-f]+)", body)
    values = np.array([float.fromhex(n) if n.startswith("0x") else float(n) for n in numbers])
    return values.astype(dtype).reshape(shape)


def constant_attr(array: np.ndarray, element_type: str) -> ir.Attribute:
    """A constant attribute holding ``array`` as ``element_type`` (current context).

    Arrays whose elements are all equal become splats; everything else becomes a
    ``dense_resource`` blob that references a private copy of the data.
    """
    shape = tuple(array.shape)
    ttype = tensor_type(shape, element_type)
    flat = array.reshape(-1)
    if flat.size and (flat.size == 1 or all_equal_bits(flat)):
        return ir.DenseElementsAttr.get_splat(ttype, _element_attr(flat[0], element_type))
    bits = sub_byte_bits(element_type)
    if bits:
        data = pack_bits(flat.astype(np.uint8), bits)
    else:
        data = np.ascontiguousarray(flat.astype(numpy_dtype(element_type)))
        data = data.view(np.uint8)
    return ir.DenseResourceElementsAttr.get_from_buffer(data, f"coreai_opt_{next(_names)}", ttype)


def packed_constant_attr(data: np.ndarray, shape: tuple[int, ...], element_type: str) -> ir.Attribute:
    """A ``dense_resource`` attribute for a sub-byte tensor whose bit stream ``data`` is already packed."""
    return ir.DenseResourceElementsAttr.get_from_buffer(
        np.ascontiguousarray(data, dtype=np.uint8), f"coreai_opt_{next(_names)}", tensor_type(shape, element_type))


def _element_attr(value: Any, element_type: str) -> ir.Attribute:
    etype = _mlir_element_type(element_type)
    if element_type.startswith(("f", "bf")):
        return ir.FloatAttr.get(etype, float(value))
    if element_type == "i1":
        return ir.IntegerAttr.get(etype, int(bool(value)))
    return ir.IntegerAttr.get(etype, int(value))


def resource_blobs(module: ir.Module) -> list[tuple[str, int]]:
    """(key, bytes) of the blob of every resource constant, in program order (the order the
    bytecode writer writes them in; ``BlobReader.stream`` checks that)."""
    from .graph import iter_constants

    blobs: dict[str, int] = {}
    for site in iter_constants(module):
        if site.is_resource:  # a blob shared by several constants is written once, at its first use
            blobs.setdefault(_resource_key(site.op.attributes["value"]), storage_bytes(site.size, site.element_type))
    return list(blobs.items())
