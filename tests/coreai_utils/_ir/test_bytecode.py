"""The bytecode resource reader agrees with the textual dump of the same module."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coreai_opt.coreai_utils._ir import mlir_module
from coreai_opt.coreai_utils._ir.bytecode import BytecodeError, FileView, WrittenChunks, blob_spans


def _bytecode(program) -> bytes:
    stream = io.BytesIO()
    mlir_module(program).operation.write_bytecode(stream)
    return stream.getvalue()


def _text_blobs(program) -> dict[str, bytes]:
    text = mlir_module(program).operation.get_asm(large_elements_limit=None)
    # The text form prefixes each blob with its 4-byte alignment.
    return {key: bytes.fromhex(data)[4:] for key, data in re.findall(r'(\w+): "0x([0-9A-F]+)"', text)}


def test_every_blob_matches_the_text_dump(small_net_fp32):
    program = small_net_fp32[0]
    data = _bytecode(program)
    spans = blob_spans(data)
    expected = _text_blobs(program)
    assert spans and set(spans) == set(expected)
    for key, span in spans.items():
        assert data[span.offset : span.offset + span.size] == expected[key]


def test_reading_through_a_file_gives_the_same_spans(small_net_fp16, tmp_path):
    data = _bytecode(small_net_fp16[0])
    path = tmp_path / "module.mlirb"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        view = FileView(handle.fileno())
        assert blob_spans(view) == blob_spans(data)
        span = next(iter(blob_spans(data).values()))
        assert view[span.offset : span.offset + span.size] == data[span.offset : span.offset + span.size]


def test_kept_chunks_give_the_same_spans_and_blob_views_without_copies(small_net_fp16):
    program = small_net_fp16[0]
    data = _bytecode(program)
    chunks = WrittenChunks()
    mlir_module(program).operation.write_bytecode(chunks)
    assert len(chunks) == len(data) and blob_spans(chunks) == blob_spans(data)
    for span in blob_spans(data).values():
        view = chunks.view(span.offset, span.size)
        assert isinstance(view, memoryview)  # each blob arrives as one write
        assert view == data[span.offset : span.offset + span.size]


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.binary(max_size=12), max_size=8), start=st.integers(-40, 60), stop=st.integers(-40, 60))
def test_kept_chunks_read_like_the_joined_bytes(parts, start, stop):
    chunks = WrittenChunks()
    for part in parts:
        buffer = bytearray(part)
        assert chunks.write(buffer) == len(part)
        buffer[:] = bytes(len(part))  # a writer may reuse its buffer: what was written stays
    joined = b"".join(parts)
    assert len(chunks) == len(joined)
    assert bytes(chunks[start:stop]) == joined[start:stop]
    if -len(joined) <= start < len(joined):
        assert chunks[start] == joined[start]
    else:
        with pytest.raises(IndexError):
            chunks[start]


def test_a_released_chunk_is_let_go_of_and_no_longer_read():
    chunks = WrittenChunks()
    for part in (b"head", b"blob-bytes", b"tail"):
        chunks.write(part)
    kept = chunks.view(4, 10)
    chunks.release(4, 9)  # not exactly a chunk: kept
    assert bytes(chunks.view(4, 10)) == b"blob-bytes"
    chunks.release(4, 10)
    assert bytes(kept) == b"blob-bytes"  # a view taken before holds its bytes
    assert bytes(chunks[0:4]) == b"head" and bytes(chunks[14:18]) == b"tail" and len(chunks) == 18
    with pytest.raises(RuntimeError, match="released"):
        chunks.view(4, 10)
    with pytest.raises(RuntimeError, match="released"):
        chunks[5]


@pytest.mark.parametrize("junk", [b"", b"not bytecode at all", b"ML\xefR\x00"])
def test_other_bytes_are_rejected(junk):
    with pytest.raises((BytecodeError, IndexError)):
        blob_spans(junk)
