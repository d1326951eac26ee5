"""Frames between the pool and its workers: arrays and objects cross unchanged."""

from __future__ import annotations

import numpy as np
import pytest

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
