"""Validated, immutable option sets for the compression passes.

The public functions keep the spec's signatures and build one of these;
validation lives here only, so the CLI and any later per-op configuration get
the same checks and the same messages (``"n_bits" must be one of ... Got 5.``).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Any

from .._types import PALETTE_BITS, STORAGE_DTYPES, CompressionGranularity, DType

PALETTIZE_GRANULARITIES = (
    CompressionGranularity.PER_TENSOR,
    CompressionGranularity.PER_CHANNEL,
    CompressionGranularity.PER_GROUPED_CHANNEL,
)


def _choices(values: tuple[object, ...]) -> str:
    return ", ".join(repr(v.value if hasattr(v, "value") else v) for v in values)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'"{name}" must be True or False. Got {value!r}.')
    return value


def _check_int(name: str, value: object, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise ValueError(f'"{name}" must be an integer >= {minimum}. Got {value!r}.')
    return int(value)


def _check_bits(name: str, value: object) -> int:
    if not _is_int(value) or value not in PALETTE_BITS:
        raise ValueError(f'"{name}" must be one of {_choices(PALETTE_BITS)}. Got {value!r}.')
    return int(value)


def _check_storage_dtype(name: str, value: object) -> DType | None:
    if value is None:
        return None
    if isinstance(value, str):
        for member in STORAGE_DTYPES:
            if value == member or value.lower() == member.value:
                return member
    raise ValueError(f'"{name}" must be None or one of {_choices(STORAGE_DTYPES)}. Got {value!r}.')


def _check_granularity(value: object) -> CompressionGranularity:
    if isinstance(value, str):
        for member in PALETTIZE_GRANULARITIES:
            if value == member or value.lower() == member.value:
                return member
    raise ValueError(
        f'"granularity" must be one of {_choices(PALETTIZE_GRANULARITIES)}. Got {value!r}.'
    )


@dataclass(frozen=True)
class PalettizeOptions:
    """Every choice ``palettize_weights`` takes, validated."""

    lut_dtype: DType | None = None
    n_bits: int = 4
    granularity: CompressionGranularity = CompressionGranularity.PER_TENSOR
    group_size: int = 32
    cluster_dim: int = 1
    enable_per_channel_scale: bool = False
    weight_num_threshold: int = 1024
    num_kmeans_workers: int = 4
    enable_fast_kmeans_mode: bool = True
    rounding_precision: int = 4

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "lut_dtype", _check_storage_dtype("lut_dtype", self.lut_dtype))
        set_(self, "n_bits", _check_bits("n_bits", self.n_bits))
        set_(self, "granularity", _check_granularity(self.granularity))
        set_(self, "group_size", _check_int("group_size", self.group_size, 1))
        set_(self, "cluster_dim", _check_int("cluster_dim", self.cluster_dim, 1))
        set_(self, "enable_per_channel_scale", _check_bool("enable_per_channel_scale", self.enable_per_channel_scale))
        set_(self, "weight_num_threshold", _check_int("weight_num_threshold", self.weight_num_threshold, 0))
        set_(self, "num_kmeans_workers", _check_int("num_kmeans_workers", self.num_kmeans_workers, 1))
        set_(self, "enable_fast_kmeans_mode", _check_bool("enable_fast_kmeans_mode", self.enable_fast_kmeans_mode))
        set_(self, "rounding_precision", _check_int("rounding_precision", self.rounding_precision, 0))
        if self.enable_per_channel_scale and self.cluster_dim > 1:
            raise ValueError(
                '"enable_per_channel_scale" is not supported with "cluster_dim" > 1. '
                f"Got cluster_dim={self.cluster_dim}."
            )

    @property
    def round_decimals(self) -> int | None:
        """Decimals the clustering rounds to, or None for exact clustering."""
        return self.rounding_precision if self.enable_fast_kmeans_mode else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation (enums as their string values)."""
        return {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(self).items()}


def _check_n_m(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    message = (
        '"n_m_ratio" must be a pair (n, m) of integers with m > 0 and 0 <= n <= m. '
        f"Got {value!r}."
    )
    try:
        items = tuple(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(message) from None
    if len(items) != 2 or not all(_is_int(v) for v in items):
        raise ValueError(message)
    n, m = (int(v) for v in items)
    if m <= 0 or not 0 <= n <= m:
        raise ValueError(message)
    return n, m


def _check_sparsity(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f'"target_sparsity" must be a number in [0, 1]. Got {value!r}.')
    return float(value)


@dataclass(frozen=True)
class SparsifyOptions:
    """Every choice ``sparsify_weights`` takes, validated."""

    target_sparsity: float | None = 0.5
    block_size: int | None = None
    n_m_ratio: tuple[int, int] | None = None
    quantize_dtype: DType | None = None
    palettize_nbits: int | None = None
    weight_num_threshold: int = 1024

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.target_sparsity is not None and self.n_m_ratio is not None:
            raise ValueError(
                '"target_sparsity" and "n_m_ratio" are mutually exclusive; set one of them to None. '
                f"Got target_sparsity={self.target_sparsity!r}, n_m_ratio={self.n_m_ratio!r}."
            )
        if self.target_sparsity is None and self.n_m_ratio is None:
            raise ValueError('One of "target_sparsity" or "n_m_ratio" must be set. Got None for both.')
        if self.quantize_dtype is not None and self.palettize_nbits is not None:
            raise ValueError(
                '"quantize_dtype" and "palettize_nbits" cannot be used together. '
                f"Got quantize_dtype={self.quantize_dtype!r}, palettize_nbits={self.palettize_nbits!r}."
            )
        set_(self, "target_sparsity", _check_sparsity(self.target_sparsity))
        set_(self, "n_m_ratio", _check_n_m(self.n_m_ratio))
        set_(self, "quantize_dtype", _check_storage_dtype("quantize_dtype", self.quantize_dtype))
        if self.palettize_nbits is not None:
            set_(self, "palettize_nbits", _check_bits("palettize_nbits", self.palettize_nbits))
        if self.block_size is not None and (not _is_int(self.block_size) or self.block_size <= 1):
            raise ValueError(f'"block_size" must be None or an integer > 1. Got {self.block_size!r}.')
        set_(self, "weight_num_threshold", _check_int("weight_num_threshold", self.weight_num_threshold, 0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation (enums as their string values)."""
        return {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(self).items()}
