"""Group rows: each row holds exactly its group's values, and the inverse restores the weight."""

from __future__ import annotations

import numpy as np
import pytest

from coreai_opt.coreai_utils._passes import layout


@pytest.mark.parametrize("shape,out_axis,n_groups", [
    ((6, 4), 0, 3), ((6, 4), 1, 2), ((6, 4), 1, 4), ((3, 8, 2, 2), 1, 4), ((3, 8, 2, 2), 0, 1), ((2, 3, 10), 2, 5),
])
def test_group_rows_hold_each_groups_values_and_invert(shape, out_axis, n_groups):
    weight = np.arange(np.prod(shape)).reshape(shape)
    rows = layout.group_rows(weight, out_axis, n_groups)
    channel_major = np.moveaxis(weight, out_axis, 0).reshape(n_groups, -1)  # the definition of a group
    assert rows.shape == channel_major.shape
    np.testing.assert_array_equal(np.sort(rows, axis=1), np.sort(channel_major, axis=1))
    np.testing.assert_array_equal(layout.from_group_rows(rows, shape, out_axis), weight)


def test_group_rows_of_a_leading_output_axis_are_a_view():
    weight = np.zeros((8, 5))
    assert np.shares_memory(layout.group_rows(weight, 0, 4), weight)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.uint8])
@pytest.mark.parametrize("tile_bytes", [1, 64, 1 << 18])
def test_group_rows_copied_in_tiles_match_the_elementwise_transpose(dtype, tile_bytes, monkeypatch):
    """Runs move as opaque items a tile of rows at a time (several tiles, the last one short, or
    one); read-only and non-contiguous weights too."""
    monkeypatch.setattr(layout, "_TILE_BYTES", tile_bytes)
    rng = np.random.default_rng(0)
    weight = rng.integers(0, 200, (37, 3, 24)).astype(dtype)
    weight.flags.writeable = False
    for array, out_axis, n_groups in ((weight, 1, 3), (weight, 2, 6), (weight, 2, 24), (weight.transpose(2, 1, 0), 1, 3)):
        before = int(np.prod(array.shape[:out_axis]))
        expected = array.reshape(before, n_groups, -1).transpose(1, 0, 2).reshape(n_groups, -1)
        rows = layout.group_rows(array, out_axis, n_groups)
        np.testing.assert_array_equal(rows, expected)
        assert rows.dtype == array.dtype
        np.testing.assert_array_equal(layout.from_group_rows(rows, array.shape, out_axis), array)


def test_vector_rows_pair_consecutive_channels_at_one_position():
    rows = np.arange(24, dtype=np.float16).reshape(4, 6)
    vectors = layout.vector_rows(rows, 2, 2)
    assert vectors.dtype == np.float32 and vectors.shape == (2, 6, 2)
    np.testing.assert_array_equal(vectors[0, 0], [rows[0, 0], rows[1, 0]])
    np.testing.assert_array_equal(vectors[1, 5], [rows[2, 5], rows[3, 5]])
    np.testing.assert_array_equal(layout.vector_rows(rows, 1, 4)[0, 1], rows[:, 1])


@pytest.mark.parametrize("shape, out_axis, n_groups, n_bits", [
    ((8, 6), 0, 4, 4), ((3, 8, 2), 1, 2, 2), ((2, 3, 16), 2, 4, 4), ((5, 8), 0, 1, 3),
])
def test_packed_group_rows_give_the_packed_weight_when_runs_fill_bytes(shape, out_axis, n_groups, n_bits):
    from coreai_opt.coreai_utils._kernels.pack import pack_bits

    values = np.random.default_rng(0).integers(0, 2**n_bits, shape).astype(np.uint8)
    assert layout.runs_fill_bytes(shape, out_axis, n_groups, n_bits)
    rows = layout.group_rows(values, out_axis, n_groups)
    packed_rows = pack_bits(rows, n_bits).reshape(n_groups, -1)
    stream = layout.packed_from_group_rows(packed_rows, shape, out_axis)
    np.testing.assert_array_equal(stream, pack_bits(values, n_bits))


def test_runs_that_end_inside_a_byte_are_told_apart():
    assert layout.runs_fill_bytes((2, 3, 4), 2, 2, 4)  # runs of 2 channels: 8 bits
    assert not layout.runs_fill_bytes((2, 3, 4), 2, 2, 3)  # 6 bits
    assert not layout.runs_fill_bytes((5, 5), 0, 1, 3)  # one run of 25 values: 75 bits
