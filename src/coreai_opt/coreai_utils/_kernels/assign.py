"""Nearest-entry assignment against given LUTs (ties go to the lower index)."""

from __future__ import annotations

import numpy as np


def nearest_scalar(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of each row's LUT; ``lut`` (G, k) sorted ascending per row."""
    values = np.asarray(values)
    mids = (lut[:, 1:].astype(np.float64) + lut[:, :-1]) / 2.0
    if values.shape[0] == 1:
        return np.searchsorted(mids[0], values[0].astype(np.float64), side="left").astype(np.uint8)[None]
    out = np.zeros(values.shape, dtype=np.uint8)
    wide = values.astype(np.float64)
    for j in range(mids.shape[1]):
        out += wide > mids[:, j : j + 1]
    return out


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
