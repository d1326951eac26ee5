"""The wire format between ``_pool.KernelPool`` and its worker processes.

One frame: two little-endian uint64 (the pickle's length, the number of
out-of-band buffers), each buffer's length, the pickle (protocol 5), then the
buffers, so arrays cross without being copied into the pickle. Kept apart from
``_pool`` so a worker imports only this, pickle, struct and numpy.

Large buffers of a request may instead be *pushed*: their length carries the
``_PUSHED`` flag and their bytes are left out of the pipe. The worker allocates
them and replies ``("addresses", [...])``; the caller writes the bytes straight
into the worker's memory (Linux ``process_vm_writev``: one copy, against two
through a pipe and a wake-up of each side per pipe-full, 0.8 ms per MB in all
on this project's machine) and sends ``True``, or ``False`` followed by the
bytes through the pipe where the OS refused.

A ``Stacked`` (arrays to be joined along their first axis) crosses as its parts,
marked ``_JOINED`` after the first: the receiver reads or takes them into one
buffer, side by side, and gets one array, so the sender never joins them.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Buffers from this size on are read into numpy arrays, not bytearrays: numpy asks Linux for huge
#: pages for large arrays, so filling one takes a few page faults instead of one per 4 KiB. Receiving
#: the 47 MB MiniLM embedding in a worker that had not received anything yet took 18 ms instead of
#: 42 ms (page faults are dear in a virtual machine).
_ARRAY_BUFFER_BYTES = 1 << 22


#: Request buffers from this size on are pushed (module docstring) where the caller may.
PUSH_BYTES = 1 << 20
_PUSHED = 1 << 63
#: A buffer's length flag: it lies right after the previous buffer, in the same allocation.
_JOINED = 1 << 62
_FLAGS = _PUSHED | _JOINED


class Stacked:
    """Arrays of one dtype and trailing shape, standing for their concatenation along axis 0.

    Sent in a frame, the receiver gets the concatenation as one array whose parts
    were read (or pushed) straight into one buffer; here, ``np.asarray`` joins them.
    """

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        parts = [np.asarray(part) for part in parts]
        if not parts or any(p.dtype != parts[0].dtype or p.shape[1:] != parts[0].shape[1:] for p in parts):
            raise ValueError("Stacked needs at least one array, all of one dtype and trailing shape")
        self.parts = parts
        self.dtype = parts[0].dtype
        self.shape = (sum(part.shape[0] for part in parts), *parts[0].shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy is False:
            raise ValueError("a Stacked becomes one array only by joining (copying) its parts")
        joined = np.concatenate(self.parts)
        return joined if dtype is None else joined.astype(dtype, copy=False)


class _Pickler(pickle.Pickler):
    """Pickles a ``Stacked`` as a persistent reference to its parts, appended to ``buffers`` as
    out-of-band buffers; ``joined`` gets the index of each part to lie right after its predecessor.
    (The buffer callback is the list's own ``append``: a method of the pickler would make a
    reference cycle that kept every pickled array alive until the cyclic garbage collector ran.)"""

    def __init__(self, stream, buffers: list, joined: set[int]) -> None:
        super().__init__(stream, protocol=5, buffer_callback=buffers.append)
        self._buffers, self._joined = buffers, joined

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not Stacked:
            return None
        for index, part in enumerate(obj.parts):
            if index:
                self._joined.add(len(self._buffers))
            self._buffers.append(pickle.PickleBuffer(np.ascontiguousarray(part)))
        return ("stacked", obj.dtype.str, obj.shape, len(obj.parts))


class _Unpickler(pickle.Unpickler):
    """Reads a frame's pickle; out-of-band buffers and ``Stacked`` parts come from one iterator, in
    the order they were pickled (pickle takes its buffers from it one at a time)."""

    def __init__(self, data, buffers) -> None:
        self._buffers = iter(buffers)
        super().__init__(io.BytesIO(data), buffers=self._buffers)

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, dtype, shape, count = pid
        if kind != "stacked":
            raise pickle.UnpicklingError(f"unknown persistent reference {kind!r}")
        parts = [next(self._buffers) for _ in range(count)]
        return np.frombuffer(_joined_block(parts), np.dtype(dtype)).reshape(shape)


def _joined_block(parts: list) -> Any:
    """The one buffer that the consecutive ``parts`` of a stack were received into (``receive``)."""
    block = parts[0].base if isinstance(parts[0], np.ndarray) and parts[0].base is not None else parts[0]
    if len(parts) > 1 and not all(isinstance(part, np.ndarray) and part.base is block for part in parts):
        raise pickle.UnpicklingError("the parts of a stacked array did not arrive in one buffer")
    return block


def _new_buffer(size: int) -> bytearray | np.ndarray:
    return np.empty(size, np.uint8) if size >= _ARRAY_BUFFER_BYTES else bytearray(size)


def _read_into(stream, buffer) -> None:
    view, done = memoryview(buffer).cast("B"), 0
    while done < view.nbytes:
        got = stream.readinto(view[done:])
        if not got:
            raise EOFError("the other process closed the pipe")
        done += got


def _read_exact(stream, size: int) -> bytearray | np.ndarray:
    buffer = _new_buffer(size)
    _read_into(stream, buffer)
    return buffer


def frame(message: Any, push: bool = False) -> list:
    """The parts of one frame for ``message``: lengths, the pickle, then its large buffers uncopied
    (with ``push``, those of at least ``PUSH_BYTES`` are marked pushed). Raises before anything is
    written when ``message`` does not pickle."""
    buffers: list[pickle.PickleBuffer] = []
    joined: set[int] = set()
    stream = io.BytesIO()
    _Pickler(stream, buffers, joined).dump(message)
    data = stream.getvalue()
    raws = [buffer.raw() for buffer in buffers]
    lengths = [raw.nbytes | (_PUSHED if push and raw.nbytes >= PUSH_BYTES else 0) | (_JOINED if i in joined else 0)
               for i, raw in enumerate(raws)]
    return [struct.pack(f"<{2 + len(raws)}Q", len(data), len(raws), *lengths), data, *raws]


def pushed_parts(parts: list) -> list:
    """The buffers of a frame (from ``frame``) marked pushed, in order."""
    count = struct.unpack_from("<2Q", parts[0])[1]
    lengths = struct.unpack_from(f"<{count}Q", parts[0], 16)
    return [raw for raw, length in zip(parts[2:], lengths, strict=True) if length & _PUSHED]


def write_frame(stream, parts: list) -> list:
    """Write the ``parts`` of one frame (from ``frame``), but for its pushed buffers: those it
    returns, in order (see ``pushed_parts``)."""
    pushed = pushed_parts(parts)
    left_out = {id(raw) for raw in pushed}
    for part in parts:
        if id(part) not in left_out:
            stream.write(part)
    stream.flush()
    return pushed


def write_parts(stream, parts: list) -> None:
    """Write ``parts`` as they are (pushed buffers the OS refused to push)."""
    for part in parts:
        stream.write(part)
    stream.flush()


def _address(buffer) -> int:
    return np.frombuffer(buffer, np.uint8).__array_interface__["data"][0]


@functools.cache
def _process_vm_writev() -> Any:
    """libc's ``process_vm_writev`` with its argument types, or None where there is none."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).process_vm_writev
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_ssize_t
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    return function


def can_push() -> bool:
    """Whether this OS offers pushing at all (a process may still refuse it: ``push`` says)."""
    return _process_vm_writev() is not None


def push(pid: int, buffers: list, addresses: list[int]) -> bool:
    """Write each buffer at the matching address of process ``pid``; whether all of it was written."""
    function = _process_vm_writev()
    if function is None or len(buffers) != len(addresses):
        return False
    import ctypes

    total = sum(memoryview(buffer).nbytes for buffer in buffers)
    local = (ctypes.c_size_t * (2 * len(buffers)))()
    remote = (ctypes.c_size_t * (2 * len(buffers)))()
    for index, (buffer, address) in enumerate(zip(buffers, addresses, strict=True)):
        local[2 * index], local[2 * index + 1] = _address(buffer), memoryview(buffer).nbytes
        remote[2 * index], remote[2 * index + 1] = address, memoryview(buffer).nbytes
    return function(pid, local, len(buffers), remote, len(buffers), 0) == total


def send(stream, message: Any) -> None:
    """Write ``message`` as one frame."""
    write_frame(stream, frame(message))


def _allocated(lengths: Sequence[int]) -> list:
    """A buffer for each length (flags included): each run of ``_JOINED`` ones shares one allocation
    with the buffer before it, as consecutive slices."""
    sizes = [length & ~_FLAGS for length in lengths]
    buffers: list = []
    start = 0
    while start < len(sizes):
        end = start + 1
        while end < len(sizes) and lengths[end] & _JOINED:
            end += 1
        if end - start == 1:
            buffers.append(_new_buffer(sizes[start]))
        else:
            block = np.empty(sum(sizes[start:end]), np.uint8)
            offsets = np.cumsum([0, *sizes[start:end]]).tolist()
            buffers.extend(block[offsets[i] : offsets[i + 1]] for i in range(end - start))
        start = end
    return buffers


def receive(stream, replies=None) -> Any:
    """Read one frame written by ``send`` or ``write_frame``; ``EOFError`` when the pipe is closed.
    A frame with pushed buffers needs the ``replies`` stream, to ask for them."""
    size, count = struct.unpack("<2Q", _read_exact(stream, 16))
    lengths = struct.unpack(f"<{count}Q", _read_exact(stream, 8 * count)) if count else ()
    data = _read_exact(stream, size)
    buffers = _allocated(lengths)
    for buffer, length in zip(buffers, lengths, strict=True):
        if not length & _PUSHED:
            _read_into(stream, buffer)
    pushed = [buffer for buffer, length in zip(buffers, lengths, strict=True) if length & _PUSHED]
    if pushed:
        if replies is None:
            raise ValueError("a frame with pushed buffers arrived where none can be asked for")
        send(replies, ("addresses", [_address(buffer) for buffer in pushed]))
        if not receive(stream):  # refused: the bytes follow through the pipe
            for buffer in pushed:
                _read_into(stream, buffer)
    return _Unpickler(data, buffers).load()
