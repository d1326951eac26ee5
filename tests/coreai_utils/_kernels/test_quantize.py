"""Symmetric quantization stays in range, never produces NaN and decodes within half a step."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from coreai_opt.coreai_utils._kernels import quantize as q
from coreai_opt.coreai_utils._kernels.quantize import FORMATS, dequantize, quantize_blocks


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("scale_dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_codes_decode_close_to_the_input(name, scale_dtype):
    fmt = FORMATS[name]
    x = np.random.default_rng(1).standard_normal((6, 40)) * np.array([1e-3, 0.1, 1, 10, 100, 1000])[:, None]
    x = x.astype(np.float32)
    codes, scale = quantize_blocks(x, fmt, (1,), np.dtype(scale_dtype))
    assert codes.dtype == fmt.dtype and scale.shape == (6, 1)
    decoded = dequantize(codes, scale, fmt)
    assert np.isfinite(decoded).all()
    step = scale.astype(np.float64)
    if fmt.is_float:
        tolerance = np.abs(x).max(axis=1, keepdims=True) * 2.0**-2  # 2-3 mantissa bits
    else:
        assert codes.astype(np.int64).min() >= (-127 if fmt.zero_point == 0 else 1)
        tolerance = step / 2 + np.abs(x).max(axis=1, keepdims=True) * 2**-7  # scale rounding
    assert (np.abs(decoded - x) <= tolerance + 1e-12).all()


def test_all_zero_and_tiny_blocks_do_not_divide_by_zero():
    fmt = FORMATS["int8"]
    x = np.array([[0.0, 0.0], [1e-9, -1e-9]], np.float32)
    codes, scale = quantize_blocks(x, fmt, (1,), np.dtype(np.float16))
    assert (scale > 0).all() and np.isfinite(dequantize(codes, scale, fmt)).all()


def test_fp8_never_overflows_to_nan():
    fmt = FORMATS["fp8_e4m3fn"]
    x = np.array([[448.0, -448.0, 1e-3, 3.0e38]], np.float32)
    codes, scale = quantize_blocks(x, fmt, (1,), np.dtype(np.float32))
    assert np.isfinite(codes.astype(np.float32)).all()


@pytest.mark.parametrize("scale_dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
@pytest.mark.parametrize("name", list(FORMATS))
def test_decoding_the_largest_value_never_overflows(name, scale_dtype):
    fmt = FORMATS[name]
    big = float(ml_dtypes.finfo(scale_dtype).max)
    x = np.array([[big, -big, big / 3, 1.0]], np.float64).astype(scale_dtype)
    codes, scale = quantize_blocks(x, fmt, (1,), np.dtype(scale_dtype))
    assert scale.astype(np.float64) * fmt.qmax <= big
    decoded_in_dtype = (scale.astype(np.float32) * (codes.astype(np.float32) - fmt.zero_point)).astype(scale_dtype)
    assert np.isfinite(decoded_in_dtype.astype(np.float32)).all()


@pytest.mark.parametrize("shape,out_axis", [((300, 40), 0), ((40, 300), 1), ((7, 5, 3, 3), 0), ((3, 6, 70), 1),
                                            ((5000,), 0), ((1, 2000), 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_blockwise_masked_scales_and_kept_codes_match_the_whole_array_forms(shape, out_axis, dtype, monkeypatch):
    monkeypatch.setattr(q, "_QUANTIZE_BLOCK", 256)  # several blocks, and rows longer than a block
    rng = np.random.default_rng(len(shape) * 10 + out_axis)
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 10, shape[out_axis]).reshape(
        [-1 if a == out_axis else 1 for a in range(len(shape))])).astype(dtype)
    keep = rng.random(shape) < 0.4
    keep[(slice(None),) * out_axis + (0,)] = False  # a channel pruned whole: its scale is 1
    fmt = FORMATS["int8"]
    reduce_axes = tuple(a for a in range(len(shape)) if a != out_axis)
    scale = q.masked_block_scales(x, keep, fmt, reduce_axes, np.dtype(dtype))
    expected = q.block_scales(x * keep, fmt, reduce_axes, np.dtype(dtype))
    assert scale.dtype == expected.dtype
    np.testing.assert_array_equal(scale, expected)
    np.testing.assert_array_equal(q.kept_codes(x, scale, fmt, keep), q.quantize(x, scale, fmt)[keep])
