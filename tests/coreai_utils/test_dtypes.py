"""Element-type helpers."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from coreai_opt.coreai_utils._dtypes import _SCAN_BLOCK, non_finite_count


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
def test_non_finite_count_matches_isfinite_at_the_edges_of_every_float_type(dtype):
    info = ml_dtypes.finfo(dtype)
    edges = [0.0, -0.0, float(info.max), -float(info.max), float(info.smallest_subnormal), float(info.tiny), 1.0]
    values = np.array(edges + [np.nan, -np.nan, np.inf, -np.inf], dtype=dtype)
    assert non_finite_count(values) == 4 == values.size - np.count_nonzero(np.isfinite(values.astype(np.float32)))
    assert non_finite_count(values[:7]) == 0
    assert non_finite_count(values[:0]) == 0
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype) if np.dtype(dtype).itemsize == 2 else None
    if every is not None:  # every 16-bit pattern
        assert non_finite_count(every) == every.size - np.count_nonzero(np.isfinite(every.astype(np.float32)))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
def test_non_finite_count_scans_every_block_of_large_and_strided_weights(dtype):
    values = np.zeros((3 * _SCAN_BLOCK + 4,), dtype=dtype)
    where = [0, _SCAN_BLOCK - 1, _SCAN_BLOCK, 2 * _SCAN_BLOCK + 7, values.size - 1]
    values[where] = [np.nan, np.inf, -np.inf, np.nan, -np.nan]
    assert non_finite_count(values) == 5
    assert non_finite_count(values.reshape(-1, 4)[:, ::-1]) == 5  # a strided view
    assert non_finite_count(values.reshape(-1, 4)[:, 1:]) == 3  # column 0 held positions 0 and _SCAN_BLOCK
