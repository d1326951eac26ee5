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
