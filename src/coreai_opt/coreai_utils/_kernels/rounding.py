"""Rounding centroids to what will be stored (a plain function, so kernel calls pickle)."""

from __future__ import annotations

import numpy as np


def round_through(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` rounded to the nearest ``dtype`` value, returned as float64."""
    return np.asarray(values).astype(dtype).astype(np.float64)
