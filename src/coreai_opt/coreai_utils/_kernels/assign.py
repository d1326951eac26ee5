"""Nearest-vector assignment against given LUTs (ties go to the lower index)."""

from __future__ import annotations

import numpy as np


def nearest_vectors(points: np.ndarray, lut: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Index of the nearest (squared Euclidean) LUT vector; ``points`` (G, n, d), ``lut`` (G, k, d)."""
    groups, count, _ = points.shape
    out = np.empty((groups, count), dtype=np.uint8)
    for g in range(groups):
        centers = lut[g].astype(np.float64)
        for start in range(0, count, chunk):
            block = points[g, start : start + chunk].astype(np.float64)
            dist = np.square(block[:, None, :] - centers[None, :, :]).sum(axis=-1)
            out[g, start : start + chunk] = np.argmin(dist, axis=1)
    return out
