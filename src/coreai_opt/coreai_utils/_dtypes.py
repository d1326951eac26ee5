"""Element types as MLIR prints them (``f32``, ``ui4``, ``f8E4M3FN`` ...) and their numpy dtypes."""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np

from ._kernels.pack import packed_size

_NUMPY_OF: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "f64": np.dtype(np.float64),
    "f8E4M3FN": np.dtype(ml_dtypes.float8_e4m3fn),
    "f8E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "si8": np.dtype(np.int8),
    "ui8": np.dtype(np.uint8),
    "si16": np.dtype(np.int16),
    "ui16": np.dtype(np.uint16),
    "si32": np.dtype(np.int32),
    "ui32": np.dtype(np.uint32),
    "si64": np.dtype(np.int64),
    "ui64": np.dtype(np.uint64),
    "i1": np.dtype(np.bool_),
}
_SUB_BYTE = re.compile(r"^ui([1-7])$")

#: Float element types a weight may have.
FLOAT_TYPES = frozenset({"f32", "f16", "bf16"})


#: Exponent bits of the 16-bit float types: a value is NaN or infinite exactly when all are set,
#: that is when its bits without the sign are at least these.
_EXPONENT_MASKS = {np.dtype(np.float16): 0x7C00, np.dtype(ml_dtypes.bfloat16): 0x7F80}


#: Values scanned at a time by ``non_finite_count``: its temporary stays in the CPU caches (about
#: twice as fast as one pass over a large weight, which writes and re-reads a temporary as large).
_SCAN_BLOCK = 1 << 16


def non_finite_count(values: np.ndarray) -> int:
    """How many of ``values`` are NaN or infinite (16-bit floats judged by their bits, which
    numpy tests several times faster than ``isfinite`` converts them)."""
    flat = values.reshape(-1)
    mask = _EXPONENT_MASKS.get(values.dtype)
    if mask is None:
        return sum(int(block.size - np.count_nonzero(np.isfinite(block))) for block in _blocks(flat))
    bits = flat.view(np.uint16)
    magnitude = np.empty(min(bits.size, _SCAN_BLOCK), np.uint16)
    count = 0
    for block in _blocks(bits):
        scanned = magnitude[: block.size]
        np.bitwise_and(block, np.uint16(0x7FFF), out=scanned)
        if scanned.max() >= mask:
            count += int(np.count_nonzero(scanned >= mask))
    return count


def _blocks(flat: np.ndarray):
    return (flat[start : start + _SCAN_BLOCK] for start in range(0, flat.size, _SCAN_BLOCK))


def sub_byte_bits(element_type: str) -> int | None:
    """``n`` for ``ui<n>`` with n < 8, else None."""
    match = _SUB_BYTE.match(element_type)
    return int(match.group(1)) if match else None


def numpy_dtype(element_type: str) -> np.dtype:
    """The numpy dtype holding one element (sub-byte ``ui<n>``: uint8)."""
    if sub_byte_bits(element_type):
        return np.dtype(np.uint8)
    try:
        return _NUMPY_OF[element_type]
    except KeyError:
        raise TypeError(f"unsupported element type {element_type}") from None


def bit_width(element_type: str) -> int:
    """Bits per element."""
    return sub_byte_bits(element_type) or numpy_dtype(element_type).itemsize * 8


def storage_bytes(count: int, element_type: str) -> int:
    """Bytes ``count`` elements occupy when stored densely (sub-byte types packed)."""
    return packed_size(count, bit_width(element_type))


def uint_type(n_bits: int) -> str:
    """The unsigned integer element type of ``n_bits``, e.g. ``'ui4'``."""
    return f"ui{n_bits}"
