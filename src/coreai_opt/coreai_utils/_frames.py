"""The wire format between ``_pool.KernelPool`` and its worker processes.

One frame: two little-endian uint64 (the pickle's length, the number of
out-of-band buffers), each buffer's length, the pickle (protocol 5), then the
buffers, so arrays cross without being copied into the pickle. Kept apart from
``_pool`` so a worker imports only this, pickle, struct and numpy.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import numpy as np

#: Buffers from this size on are read into numpy arrays, not bytearrays: numpy asks Linux for huge
#: pages for large arrays, so filling one takes a few page faults instead of one per 4 KiB. Receiving
#: the 47 MB MiniLM embedding in a worker that had not received anything yet took 18 ms instead of
#: 42 ms (page faults are dear in a virtual machine).
_ARRAY_BUFFER_BYTES = 1 << 22


def _read_exact(stream, size: int) -> bytearray | np.ndarray:
    buffer = np.empty(size, np.uint8) if size >= _ARRAY_BUFFER_BYTES else bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        got = stream.readinto(view[done:])
        if not got:
            raise EOFError("the other process closed the pipe")
        done += got
    return buffer


def frame(message: Any) -> list:
    """The parts of one frame for ``message``: lengths, the pickle, then its large buffers uncopied.
    Raises before anything is written when ``message`` does not pickle."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    return [struct.pack(f"<{2 + len(raws)}Q", len(data), len(raws), *(raw.nbytes for raw in raws)), data, *raws]


def write_frame(stream, parts: list) -> None:
    """Write the ``parts`` of one frame (from ``frame``)."""
    for part in parts:
        stream.write(part)
    stream.flush()


def send(stream, message: Any) -> None:
    """Write ``message`` as one frame."""
    write_frame(stream, frame(message))


def receive(stream) -> Any:
    """Read one frame written by ``send``; ``EOFError`` when the pipe is closed."""
    size, count = struct.unpack("<2Q", _read_exact(stream, 16))
    lengths = struct.unpack(f"<{count}Q", _read_exact(stream, 8 * count)) if count else ()
    data = _read_exact(stream, size)
    return pickle.loads(data, buffers=[_read_exact(stream, length) for length in lengths])
