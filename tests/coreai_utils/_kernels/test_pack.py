"""Sub-byte packing matches Core AI's LSB-first bit stream."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from coreai_opt.coreai_utils._kernels.pack import pack_bits, packed_size, unpack_bits, with_packed_indices


def _reference(values: np.ndarray, n_bits: int) -> np.ndarray:
    bits = (values.astype(np.uint64)[:, None] >> np.arange(n_bits, dtype=np.uint64)) & 1
    return np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little")


@settings(max_examples=200, deadline=None)
@given(n_bits=st.integers(1, 8), count=st.integers(0, 200), seed=st.integers(0, 2**31))
def test_pack_matches_the_bit_stream_and_round_trips(n_bits, count, seed):
    values = np.random.default_rng(seed).integers(0, 2**n_bits, count).astype(np.uint8)
    packed = pack_bits(values, n_bits)
    assert packed.size == packed_size(count, n_bits)
    np.testing.assert_array_equal(packed, _reference(values, n_bits))
    np.testing.assert_array_equal(unpack_bits(packed, n_bits, (count,)), values)


def test_unpack_restores_the_shape():
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) % 8
    np.testing.assert_array_equal(unpack_bits(pack_bits(values, 3), 3, (2, 3, 4)), values)


def test_a_clustering_call_can_hand_back_its_indices_packed_row_by_row():
    indices = np.random.default_rng(1).integers(0, 8, (3, 16)).astype(np.uint8)
    lut = np.arange(24.0).reshape(3, 8)
    got_lut, packed = with_packed_indices(lambda values: (lut, indices), 3, np.zeros((3, 16)))
    assert got_lut is lut and packed.shape == (3, 6)
    np.testing.assert_array_equal(packed.reshape(-1), pack_bits(indices, 3))
    with pytest.raises(ValueError, match="whole bytes"):
        with_packed_indices(lambda values: (lut, indices[:, :15]), 3, np.zeros((3, 15)))
