"""Locate ``dense_resource`` blobs in MLIR bytecode.

The Core AI Python bindings can create a ``DenseResourceElementsAttr`` from a
buffer but offer no way to read one back. Serialising the module to MLIR
bytecode (``Operation.write_bytecode``) is fast and writes every blob verbatim,
so this module parses just enough of the documented bytecode format (the string,
resource and resource-offset sections) to find each blob by its key.

Format reference: MLIR's ``docs/BytecodeFormat.md``.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from dataclasses import dataclass
from typing import Protocol

_MAGIC = b"ML\xefR"
_PADDING = 0xCB
_SECTION_STRING = 0
_SECTION_RESOURCE = 5
_SECTION_RESOURCE_OFFSET = 6
_KIND_BLOB = 0


class BytecodeError(ValueError):
    """The bytes are not MLIR bytecode this reader understands."""


@dataclass(frozen=True)
class BlobSpan:
    """Where one resource blob's bytes lie in the bytecode buffer."""

    offset: int
    size: int


class ByteSource(Protocol):
    """Random access to bytes: ``len()``, ``[i]`` -> int and ``[a:b]`` -> bytes-like."""

    def __len__(self) -> int: ...

    def __getitem__(self, index): ...


class FileView:
    """A read-only ``ByteSource`` over an open file descriptor, read with ``pread``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int | slice) -> int | bytes:
        if isinstance(index, slice):
            start, stop, _ = index.indices(self._size)
            chunks = []
            while start < stop:
                chunk = os.pread(self._fd, stop - start, start)
                if not chunk:
                    break
                chunks.append(chunk)
                start += len(chunk)
            return b"".join(chunks)
        return os.pread(self._fd, 1, index)[0]


class WrittenChunks:
    """A write-only stream for ``write_bytecode`` that keeps each written ``bytes`` as it is,
    then a read-only ``ByteSource`` over them. Copying into one growing buffer (``io.BytesIO``)
    cost several times the serialisation itself; blobs arrive as one write each, so ``view``
    of a blob is a zero-copy slice of its chunk."""

    def __init__(self) -> None:
        self._chunks: list[bytes | None] = []  # None: released
        self._starts = [0]  # offset of each chunk, then the total size

    def write(self, data) -> int:
        chunk = data if type(data) is bytes else bytes(data)  # a reused buffer would change under us
        self._chunks.append(chunk)
        self._starts.append(self._starts[-1] + len(chunk))
        return len(chunk)

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: int | slice) -> int | bytes | memoryview:
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            return self.view(start, max(stop - start, 0))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("bytecode offset out of range")
        chunk = bisect_right(self._starts, index) - 1
        return self._held(chunk)[index - self._starts[chunk]]

    def release(self, start: int, size: int) -> None:
        """Let go of the chunk that is exactly the ``size`` bytes from ``start`` (a blob, written in
        one piece), if there is one: its bytes are freed once no view of them is left."""
        chunk = bisect_right(self._starts, start) - 1
        if 0 <= chunk < len(self._chunks) and self._starts[chunk] == start and self._starts[chunk + 1] == start + size:
            self._chunks[chunk] = None

    def _held(self, chunk: int) -> bytes:
        data = self._chunks[chunk]
        if data is None:
            raise RuntimeError("these bytecode bytes were released")
        return data

    def view(self, start: int, size: int) -> bytes | memoryview:
        """``size`` bytes from ``start`` (fewer at the end): a view when one chunk holds them all."""
        stop = min(start + size, len(self))
        chunk = bisect_right(self._starts, start) - 1
        if chunk >= len(self._chunks) or stop <= start:
            return b""
        if stop <= self._starts[chunk + 1]:
            base = self._starts[chunk]
            return memoryview(self._held(chunk))[start - base : stop - base]
        parts = []
        while start < stop:
            base, end = self._starts[chunk], self._starts[chunk + 1]
            parts.append(self._held(chunk)[start - base : min(stop, end) - base])
            start, chunk = end, chunk + 1
        return b"".join(parts)


def _read_varint(buf: ByteSource, pos: int) -> tuple[int, int]:
    """Decode one PrefixVarInt at ``pos``; return (value, next position)."""
    first = buf[pos]
    if first & 1:
        return first >> 1, pos + 1
    if first == 0:
        return int.from_bytes(buf[pos + 1 : pos + 9], "little"), pos + 9
    n_bytes = (first & -first).bit_length()
    value = int.from_bytes(buf[pos : pos + n_bytes], "little") >> n_bytes
    return value, pos + n_bytes


def _skip_padding(buf: ByteSource, pos: int, base: int, alignment: int) -> int:
    """Step over the 0xCB bytes that align ``pos`` to ``alignment`` relative to ``base``."""
    n_pad = -(pos - base) % alignment
    if n_pad and any(byte != _PADDING for byte in bytes(buf[pos : pos + n_pad])):
        raise BytecodeError(f"expected padding bytes at offset {pos}")
    return pos + n_pad


def _sections(buf: ByteSource) -> dict[int, tuple[int, int]]:
    """Map section id -> (data offset, length)."""
    if bytes(buf[:4]) != _MAGIC:
        raise BytecodeError("not MLIR bytecode (bad magic number)")
    _, pos = _read_varint(buf, 4)
    producer_end = bytes(buf[pos : pos + 4096]).find(b"\0")
    if producer_end < 0:
        raise BytecodeError("unterminated producer string")
    pos += producer_end + 1
    found: dict[int, tuple[int, int]] = {}
    while pos < len(buf):
        header = buf[pos]
        pos += 1
        length, pos = _read_varint(buf, pos)
        if header & 0x80:
            alignment, pos = _read_varint(buf, pos)
            pos = _skip_padding(buf, pos, 0, alignment)
        found[header & 0x7F] = (pos, length)
        pos += length
    return found


def _strings(buf: ByteSource, start: int, length: int) -> list[str]:
    """Decode the string table; lengths are stored last-string-first."""
    count, pos = _read_varint(buf, start)
    table = [""] * count
    end = start + length
    for index in range(count - 1, -1, -1):
        size, pos = _read_varint(buf, pos)
        table[index] = bytes(buf[end - size : end - 1]).decode()
        end -= size
    return table


def blob_spans(buffer: bytes | bytearray | memoryview | ByteSource) -> dict[str, BlobSpan]:
    """Return the location of every blob resource in a bytecode buffer, by key."""
    if isinstance(buffer, (bytes, bytearray, memoryview)):
        buffer = memoryview(buffer).cast("B")
    sections = _sections(buffer)
    if _SECTION_RESOURCE_OFFSET not in sections:
        return {}
    start, length = sections[_SECTION_STRING]
    strings = _strings(memoryview(bytes(buffer[start : start + length])), 0, length)
    start, length = sections[_SECTION_RESOURCE_OFFSET]
    offsets = memoryview(bytes(buffer[start : start + length]))

    entries: list[tuple[str, int, int]] = []
    _, pos = _read_varint(offsets, 0)  # external groups come first; all groups share one layout
    while pos < length:
        _, pos = _read_varint(offsets, pos)  # provider: external group key or dialect number
        count, pos = _read_varint(offsets, pos)
        for _ in range(count):
            key, pos = _read_varint(offsets, pos)
            size, pos = _read_varint(offsets, pos)
            entries.append((strings[key], size, offsets[pos]))
            pos += 1

    spans: dict[str, BlobSpan] = {}
    base, _ = sections[_SECTION_RESOURCE]
    cursor = base
    for key, size, kind in entries:
        if kind == _KIND_BLOB:
            header = memoryview(bytes(buffer[cursor : cursor + 18]))
            alignment, pos = _read_varint(header, 0)
            blob_size, pos = _read_varint(header, pos)
            pos = _skip_padding(buffer, cursor + pos, base, max(alignment, 1))
            spans[key] = BlobSpan(pos, blob_size)
        cursor += size
    return spans
