"""Frames between the pool and its workers: arrays and objects cross unchanged."""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np
import pytest

from coreai_opt.coreai_utils import _frames
from coreai_opt.coreai_utils._frames import receive, send


def test_frames_carry_arrays_and_objects_unchanged(tmp_path):
    message = ("ok", (np.arange(10.0).reshape(2, 5)[:, ::2], np.ones(3, np.uint8), {"k": [1, "x"]}))
    path = tmp_path / "frame"
    with open(path, "wb") as stream:
        send(stream, message)
        send(stream, None)
    with open(path, "rb") as stream:
        kind, (strided, ones, other) = receive(stream)
        assert receive(stream) is None
        with pytest.raises(EOFError):
            receive(stream)
    assert kind == "ok" and other == {"k": [1, "x"]}
    np.testing.assert_array_equal(strided, np.arange(10.0).reshape(2, 5)[:, ::2])
    assert ones.dtype == np.uint8 and ones.flags.writeable


def _owner(array: np.ndarray):
    """The object that owns an array's memory (the end of its chain of bases)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array.obj if isinstance(array, memoryview) else array


def test_large_buffers_arrive_in_numpy_arrays_and_stay_writable(tmp_path):
    """Buffers from ``_ARRAY_BUFFER_BYTES`` on are read into numpy arrays (huge pages), smaller ones
    into bytearrays; either way the arrays arrive equal and writable."""
    large = np.random.default_rng(0).standard_normal(_frames._ARRAY_BUFFER_BYTES // 8 + 1).astype(np.float64)
    small = np.arange(7, dtype=np.int16)
    path = tmp_path / "frame"
    with open(path, "wb") as stream:
        send(stream, (large, small, bytearray(b"x" * _frames._ARRAY_BUFFER_BYTES)))
    with open(path, "rb") as stream:
        got_large, got_small, got_bytes = receive(stream)
    np.testing.assert_array_equal(got_large, large)
    np.testing.assert_array_equal(got_small, small)
    assert isinstance(_owner(got_large), np.ndarray) and isinstance(_owner(got_small), bytearray)
    assert got_large.flags.writeable and got_small.flags.writeable
    assert got_bytes == bytearray(b"x" * _frames._ARRAY_BUFFER_BYTES)


@contextlib.contextmanager
def _receiving():
    """(request stream, reply stream, list of what arrived): a thread receives one frame from the
    request pipe, asking for pushed buffers on the reply pipe, as a worker does; joined on exit."""
    request_in, request_out = os.pipe()
    reply_in, reply_out = os.pipe()
    with open(request_in, "rb") as requests, open(request_out, "wb") as to_requests, \
            open(reply_in, "rb") as replies, open(reply_out, "wb") as to_replies:
        got: list = []
        receiver = threading.Thread(target=lambda: got.append(receive(requests, to_replies)))
        receiver.start()
        try:
            yield to_requests, replies, got
        finally:
            to_requests.flush()
            receiver.join(30)


@pytest.mark.parametrize("pushed", [True, False], ids=["pushed", "refused"])
def test_pushed_buffers_arrive_through_the_os_or_else_through_the_pipe(pushed, monkeypatch):
    """Large request buffers are left out of the pipe: the receiver allocates them and asks for them
    by address; they are written straight into its memory, or, refused, follow through the pipe."""
    if pushed and not _frames.can_push():
        pytest.skip("this OS cannot write into another process's memory")
    monkeypatch.setattr(_frames, "PUSH_BYTES", 64)
    large, small = np.arange(1000.0), np.arange(3)
    with _receiving() as (to_requests, replies, got):
        parts = _frames.frame(("call", large, small), push=True)
        [part] = _frames.pushed_parts(parts)
        assert memoryview(part).nbytes == large.nbytes
        _frames.write_frame(to_requests, parts)
        kind, addresses = receive(replies)
        done = pushed and _frames.push(os.getpid(), [part], addresses)  # this process stands in for the worker
        assert kind == "addresses" and done == pushed
        send(to_requests, done)
        if not done:
            _frames.write_parts(to_requests, [part])
    [(name, got_large, got_small)] = got
    assert name == "call" and got_large.flags.writeable
    np.testing.assert_array_equal(got_large, large)
    np.testing.assert_array_equal(got_small, small)


def test_a_frame_without_pushing_marks_nothing_pushed():
    parts = _frames.frame(np.arange(1 << 18, dtype=np.uint8))
    assert not _frames.pushed_parts(parts) and len(parts) == 3


def _stack():
    rng = np.random.default_rng(4)
    return [rng.standard_normal((3, 5)).astype(np.float32), np.arange(10.0, dtype=np.float32).reshape(2, 5)[:, ::-1],
            np.zeros((0, 5), np.float32), rng.standard_normal((1, 5)).astype(np.float32)]


def test_a_stacked_array_arrives_as_one_array_read_into_one_buffer(tmp_path):
    """A ``Stacked`` crosses as its parts (a strided one and an empty one included), read side by side
    into one buffer: the receiver gets their concatenation without joining them; here it joins on demand."""
    parts = _stack()
    stacked = _frames.Stacked(parts)
    assert stacked.shape == (6, 5) and len(stacked) == 6 and stacked.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(stacked), np.concatenate(parts))
    with pytest.raises(ValueError, match="copying"):
        np.asarray(stacked, copy=False)
    path = tmp_path / "frame"
    with open(path, "wb") as stream:
        send(stream, ("call", np.arange(3), stacked, _frames.Stacked(parts[:1]), "after"))
    with open(path, "rb") as stream:
        name, before, got, single, after = receive(stream)
    assert (name, after) == ("call", "after")
    np.testing.assert_array_equal(before, np.arange(3))
    np.testing.assert_array_equal(got, np.concatenate(parts))
    np.testing.assert_array_equal(single, parts[0])
    assert got.flags.c_contiguous and got.flags.writeable and got.dtype == np.float32
    assert _owner(got).nbytes == got.nbytes  # one buffer holds all of it: nothing was joined on arrival


def test_the_parts_of_a_stacked_array_are_pushed_into_one_buffer(monkeypatch):
    if not _frames.can_push():
        pytest.skip("this OS cannot write into another process's memory")
    monkeypatch.setattr(_frames, "PUSH_BYTES", 16)
    parts = _stack()
    with _receiving() as (to_requests, replies, got):
        pushed = _frames.write_frame(to_requests, _frames.frame(_frames.Stacked(parts), push=True))
        assert len(pushed) == 3  # the empty part is too small to push
        kind, addresses = receive(replies)
        sizes = [memoryview(part).nbytes for part in pushed]
        assert kind == "addresses" and addresses[1] == addresses[0] + sizes[0]  # side by side
        send(to_requests, _frames.push(os.getpid(), pushed, addresses))
    np.testing.assert_array_equal(got[0], np.concatenate(parts))


@pytest.mark.parametrize("parts", [[], [np.zeros((2, 3)), np.zeros((2, 4))], [np.zeros(2), np.zeros(2, np.int32)]])
def test_a_stack_needs_arrays_of_one_dtype_and_trailing_shape(parts):
    with pytest.raises(ValueError, match="one dtype and trailing shape"):
        _frames.Stacked(parts)


def test_framing_a_message_keeps_none_of_its_arrays_alive():
    """Once its frame is written and dropped, nothing of a message is held (not even until the cyclic
    garbage collector runs): a worker's results and the caller's weight views are freed at once."""
    import gc
    import weakref

    array = np.arange(1000.0)
    alive = weakref.ref(array)
    gc.disable()
    try:
        parts = _frames.frame(("call", array, _frames.Stacked([array[:500], array[500:]])))
        assert len(parts) == 5
        del parts, array
        assert alive() is None
    finally:
        gc.enable()
