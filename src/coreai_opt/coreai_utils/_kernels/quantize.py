"""Symmetric linear quantization to int8 / uint8 / fp8, with block-wise scales.

``decoded = scale * (q - zero_point)``; the scale of a block is its largest
magnitude divided by the format's largest code, rounded *down* to the scale's
storage type, so ``scale * qmax`` never exceeds the block's largest magnitude and
decoding can never overflow (rounding up to float16 could turn a weight of
65504 into ``516 * 127 = 65532``, which float16 stores as inf). Quantization is
computed in float64, so no input in range of float32 overflows on the way.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class QuantFormat:
    """A storage format for quantized values."""

    name: str
    element_type: str  # as MLIR prints it
    dtype: np.dtype
    qmax: float  # largest magnitude code
    zero_point: int  # code of 0.0

    @property
    def is_float(self) -> bool:
        return self.element_type.startswith("f")


FORMATS: dict[str, QuantFormat] = {
    "int8": QuantFormat("int8", "si8", np.dtype(np.int8), 127.0, 0),
    "uint8": QuantFormat("uint8", "ui8", np.dtype(np.uint8), 127.0, 128),
    "fp8_e4m3fn": QuantFormat("fp8_e4m3fn", "f8E4M3FN", np.dtype(ml_dtypes.float8_e4m3fn), 448.0, 0),
    "fp8_e5m2": QuantFormat("fp8_e5m2", "f8E5M2", np.dtype(ml_dtypes.float8_e5m2), 57344.0, 0),
}


#: Values handled at a time by ``masked_block_scales`` and ``kept_codes``: their temporaries stay in
#: the CPU caches (quantizing the MiniLM embedding at once took 70-145 ms, most of it first touches
#: of 94 MB of float64 temporaries; in blocks, 27 ms).
_QUANTIZE_BLOCK = 1 << 16


def block_scales(x: np.ndarray, fmt: QuantFormat, reduce_axes: tuple[int, ...], scale_dtype: np.dtype) -> np.ndarray:
    """Per-block scales (kept dims), as stored in ``scale_dtype``; never zero, inf or NaN."""
    kept = [1 if axis in reduce_axes else size for axis, size in enumerate(x.shape)]
    if x.size == 0:
        return np.ones(kept, scale_dtype)
    return scales_of_amax(np.max(magnitudes(x), axis=reduce_axes, keepdims=True), fmt, scale_dtype)


def magnitudes(x: np.ndarray) -> np.ndarray:
    """``|x|`` in float32, or in float64 for float64 ``x``: exact for every float type weights come in."""
    return np.abs(x if x.dtype in (np.float32, np.float64) else x.astype(np.float32))


def masked_block_scales(x: np.ndarray, keep: np.ndarray, fmt: QuantFormat, reduce_axes: tuple[int, ...],
                        scale_dtype: np.dtype) -> np.ndarray:
    """``block_scales(x * keep, ...)`` for finite ``x``, a block of leading-axis slices at a time (no
    full-size temporaries)."""
    if x.ndim == 0 or x.size == 0:
        return block_scales(x * keep, fmt, reduce_axes, scale_dtype)
    parts = []
    for rows in _leading_blocks(x):
        magnitude = magnitudes(x[rows])
        magnitude *= keep[rows]
        parts.append(np.max(magnitude, axis=reduce_axes, keepdims=True))
    amax = np.concatenate(parts) if 0 not in reduce_axes else np.max(parts, axis=0)
    return scales_of_amax(amax, fmt, scale_dtype)


def scales_of_amax(amax: np.ndarray, fmt: QuantFormat, scale_dtype: np.dtype) -> np.ndarray:
    """Scales of blocks whose largest magnitudes are ``amax`` (see ``block_scales``)."""
    amax = amax.astype(np.float64)
    scale = round_down_positive(amax / fmt.qmax, scale_dtype)
    smallest = np.asarray(ml_dtypes.finfo(scale_dtype).smallest_subnormal, scale_dtype)
    scale = np.where(amax == 0, np.ones((), scale_dtype), scale)  # all-zero block: any scale works
    return np.where(scale == 0, smallest, scale).astype(scale_dtype)  # underflow: smallest step


def round_down_positive(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Non-negative float64 ``values`` rounded toward zero into ``dtype`` (any float type, bfloat16 included)."""
    stored = values.astype(dtype)
    too_big = stored.astype(np.float64) > values
    bits = stored.view(f"u{dtype.itemsize}")
    # For positive floats the next value down has the bit pattern minus one.
    lowered = np.where(too_big & (bits > 0), bits - 1, bits).astype(bits.dtype)
    return lowered.view(dtype)


def quantize(x: np.ndarray, scale: np.ndarray, fmt: QuantFormat) -> np.ndarray:
    """Codes of ``x`` for broadcastable ``scale`` (round to nearest, clipped to the format)."""
    ratio = x.astype(np.float64)
    ratio /= scale.astype(np.float64)
    np.clip(ratio, -fmt.qmax, fmt.qmax, out=ratio)
    if fmt.is_float:
        return ratio.astype(fmt.dtype)
    np.rint(ratio, out=ratio)
    if fmt.zero_point:
        ratio += fmt.zero_point
    return ratio.astype(fmt.dtype)


def kept_codes(x: np.ndarray, scale: np.ndarray, fmt: QuantFormat, keep: np.ndarray) -> np.ndarray:
    """``quantize(x, scale, fmt)[keep]`` (row-major order), a block of leading-axis slices at a time."""
    if x.ndim == 0 or x.size == 0:
        return quantize(x, scale, fmt)[keep]
    parts = []
    for rows in _leading_blocks(x):
        codes = quantize(x[rows], scale[rows] if scale.shape[0] > 1 else scale, fmt)
        parts.append(kept_values(codes, keep[rows]))
    return np.concatenate(parts)


def kept_values(array: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``array[keep]`` (row-major order): ``np.compress`` on the flattened arrays is 4-5x faster."""
    return np.compress(keep.reshape(-1), array.reshape(-1))


def _leading_blocks(x: np.ndarray) -> list[slice]:
    """Slices of ``x``'s leading axis (of non-zero size) holding about ``_QUANTIZE_BLOCK`` values each."""
    step = max(1, _QUANTIZE_BLOCK // (x.size // x.shape[0]))
    return [slice(start, start + step) for start in range(0, x.shape[0], step)]


def dequantize(q: np.ndarray, scale: np.ndarray, fmt: QuantFormat) -> np.ndarray:
    """Exact float64 values the codes stand for."""
    return scale.astype(np.float64) * (q.astype(np.float64) - fmt.zero_point)


def quantize_blocks(
    x: np.ndarray, fmt: QuantFormat, reduce_axes: tuple[int, ...], scale_dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales) of ``x`` with one scale per block spanned by ``reduce_axes``."""
    scale = block_scales(x, fmt, reduce_axes, np.dtype(scale_dtype))
    return quantize(x, scale, fmt), scale
