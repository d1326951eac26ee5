"""Public enums of the compression API: data types and granularities."""

from __future__ import annotations

from enum import Enum


class _StrEnum(str, Enum):
    """A string enum whose members compare equal to their lower-case values."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object, parameter: str) -> _StrEnum:
        """Return the member named by ``value`` (a member or its string), else raise ValueError."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f'"{parameter}" must be one of {allowed}. Got {value!r}.')


class DType(_StrEnum):
    """Storage data types for quantized values.

    Each member's value is its lower-case name, so ``DType("int8") is DType.INT8``
    and ``DType.INT8 == "int8"``.
    """

    INT2 = "int2"
    UINT2 = "uint2"
    INT4 = "int4"
    UINT4 = "uint4"
    INT8 = "int8"
    UINT8 = "uint8"
    FP4_E2M1FN = "fp4_e2m1fn"
    FP8_E4M3FN = "fp8_e4m3fn"
    FP8_E5M2 = "fp8_e5m2"
    FP8_E8M0FNU = "fp8_e8m0fnu"


class CompressionGranularity(_StrEnum):
    """How many sets of compression parameters a weight gets.

    ``PER_TENSOR``: one for the whole weight. ``PER_CHANNEL``: one per output
    channel. ``PER_GROUPED_CHANNEL``: one per group of consecutive output channels.
    ``PER_BLOCK``: one per block of elements (quantization only).
    """

    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"
    PER_BLOCK = "per_block"
    PER_GROUPED_CHANNEL = "per_grouped_channel"


#: DTypes a LUT or the non-zero values of a sparse weight may be stored in.
STORAGE_DTYPES: tuple[DType, ...] = (
    DType.INT8,
    DType.UINT8,
    DType.FP8_E4M3FN,
    DType.FP8_E5M2,
)

#: Bit widths palettization supports.
PALETTE_BITS: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
