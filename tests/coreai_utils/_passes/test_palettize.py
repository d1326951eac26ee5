"""Palettization encoder internals: per-channel scaling and how groups are split into kernel calls."""

from __future__ import annotations

import numpy as np
import pytest

from coreai_opt.coreai_utils import CompressionGranularity
from coreai_opt.coreai_utils._passes import palettize
from coreai_opt.coreai_utils._passes.options import PalettizeOptions


@pytest.mark.parametrize("dtype, element_type", [(np.float32, "f32"), (np.float16, "f16")])
def test_channel_scaling_in_float32_gives_the_float64_bits(dtype, element_type):
    rng = np.random.default_rng(5)
    info = np.finfo(dtype)
    weight = (rng.standard_normal((300, 257)) * rng.uniform(1e-3, 1e3, (300, 1))).astype(dtype)
    weight[0, ::3] = info.smallest_subnormal
    weight[1, ::5] = -info.max
    weight[2] = 0
    scale = palettize._channel_scales(weight, 0, element_type)
    expected_scale = np.max(np.abs(weight.astype(np.float64)), axis=1, keepdims=True).astype(dtype)
    np.testing.assert_array_equal(scale, np.where(expected_scale > 0, expected_scale, 1))
    got = palettize._scaled_values(weight, scale)
    expected = (weight.astype(np.float64) / scale).astype(np.float32)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expected.view(np.uint32))


class _RecordingPool:
    def __init__(self):
        self.chunks = []

    def map(self, function, chunks):
        self.chunks.append([chunk.shape for chunk in chunks])
        return [function(chunk) for chunk in chunks]


@pytest.mark.parametrize("granularity, expected", [
    ("per_tensor", [[(6, 1 << 20)]]),  # a batch of whole weights is one call, whichever its size
    ("per_channel", [[(4, 1 << 20), (2, 1 << 20)]]),  # groups of one weight: fixed-size chunks
])
def test_groups_go_to_the_kernel_in_chunks_of_whole_weights_or_fixed_size(granularity, expected, monkeypatch):
    monkeypatch.setattr(palettize, "palettize_rows", lambda chunk, **_: (np.zeros((chunk.shape[0], 4)),
                                                                         np.zeros(chunk.shape, np.uint8)))
    encoder = palettize.PalettizeEncoder(PalettizeOptions(n_bits=2, granularity=CompressionGranularity(granularity)))
    pool = _RecordingPool()
    lut, indices = encoder._cluster(np.zeros((6, 1 << 20), np.float32), "f32", pool)
    assert pool.chunks == expected and lut.shape == (6, 4) and indices.shape == (6, 1 << 20)
