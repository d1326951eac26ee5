"""Symmetric quantization stays in range, never produces NaN and decodes within half a step."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

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
