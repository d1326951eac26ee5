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


@pytest.mark.parametrize("granularity, shape, expected", [
    ("per_tensor", (6, 8192), [6]),  # a batch of whole weights is one call, whichever its size
    ("per_channel", (40, 64), [16, 16, 8]),  # short groups: chunks of _CHUNK_VALUES values
    ("per_channel", (10, 512), [4, 4, 2]),  # longer ones: at least _CHUNK_GROUPS groups ...
    ("per_channel", (5, 2048), [2, 2, 1]),  # ... up to _MAX_CHUNK_VALUES values
    ("per_channel", (3, 8192), [1, 1, 1]),  # and at least one group
])
def test_groups_go_to_the_kernel_in_chunks_of_whole_weights_or_fixed_size(granularity, shape, expected, monkeypatch):
    monkeypatch.setattr(palettize, "palettize_rows", lambda chunk, **_: (np.zeros((chunk.shape[0], 4)),
                                                                         np.zeros(chunk.shape, np.uint8)))
    monkeypatch.setattr(palettize, "_CHUNK_VALUES", 1024)
    monkeypatch.setattr(palettize, "_CHUNK_GROUPS", 4)
    monkeypatch.setattr(palettize, "_MAX_CHUNK_VALUES", 4096)
    encoder = palettize.PalettizeEncoder(PalettizeOptions(n_bits=2, granularity=CompressionGranularity(granularity)))
    pool = _RecordingPool()
    lut, indices = encoder._cluster([np.zeros(shape, np.float32)], "f32", pool)
    assert pool.chunks == [[(rows, shape[1]) for rows in expected]]
    assert lut.shape == (shape[0], 4) and indices.shape == shape


def test_a_batch_of_weights_is_chunked_across_them_without_being_joined_here():
    """The groups of a batch of weights go to the kernel in the chunks of their concatenation, but a
    chunk spanning weights is a ``Stacked`` of views (joined only where it is clustered); the results
    are the same as clustering each weight alone."""
    encoder = palettize.PalettizeEncoder(PalettizeOptions(n_bits=2, granularity=CompressionGranularity.PER_CHANNEL))
    rng = np.random.default_rng(8)
    parts = [rng.standard_normal((rows, 300)).astype(np.float32) for rows in (5000, 9000, 20)]
    chunks = palettize._row_chunks(parts, 6000)
    assert [chunk.shape for chunk in chunks] == [(6000, 300), (6000, 300), (2020, 300)]
    assert [type(chunk).__name__ for chunk in chunks] == ["Stacked", "ndarray", "Stacked"]
    assert all(np.shares_memory(piece, part) for piece, part in zip(chunks[0].parts, parts[:2], strict=True))
    np.testing.assert_array_equal(np.concatenate([np.asarray(chunk) for chunk in chunks]), np.concatenate(parts))
    lut, indices = encoder._cluster(parts, "f32", _RecordingPool())
    for part, start, end in zip(parts, (0, 5000, 14000), (5000, 14000, 14020), strict=True):
        alone_lut, alone_indices = encoder._cluster([part], "f32", _RecordingPool())
        np.testing.assert_array_equal(lut[start:end], alone_lut)
        np.testing.assert_array_equal(indices[start:end], alone_indices)



@pytest.mark.parametrize("n_bits, granularity, shapes, packs", [
    (4, "per_grouped_channel", [((8, 12), 0), ((1, 12, 8), 2)], True),  # runs of 2 channels x 4 bits: bytes
    (3, "per_channel", [((6, 8), 0)], True),  # rows of 8 3-bit values: 3 bytes
    (3, "per_tensor", [((5, 5), 0)], False),  # 25 3-bit values do not end on a byte
    (2, "per_grouped_channel", [((1, 12, 6), 2)], False),  # runs of 3 channels x 2 bits: 6 bits
    (8, "per_tensor", [((4, 4), 0)], False),  # 8-bit indices are bytes already
])
def test_indices_come_back_packed_when_their_runs_fill_whole_bytes(n_bits, granularity, shapes, packs, monkeypatch):
    """Kernel calls pack their group rows' indices where each run of a group's values in storage fills
    whole bytes; the weights' index constants are the same bits either way."""
    from coreai_opt.coreai_utils._ir import Role

    options = PalettizeOptions(n_bits=n_bits, granularity=CompressionGranularity(granularity), group_size=2)
    encoder = palettize.PalettizeEncoder(options)
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal(shape).astype(np.float32) for shape, _ in shapes]
    roles = [Role(frozenset({"linear"}), out_axis, None) for _, out_axis in shapes]
    assert encoder._packs_indices([encoder._prepare(w, r, "f32") for w, r in zip(weights, roles, strict=True)]) == packs
    results = encoder.encode_batch(weights, roles, "f32", _RecordingPool())
    monkeypatch.setattr(palettize.PalettizeEncoder, "_packs_indices", lambda self, ready: False)
    expected = encoder.encode_batch(weights, roles, "f32", _RecordingPool())
    for got, want in zip(results, expected, strict=True):
        got_indices, want_indices = got.node.indices, want.node.indices
        assert got_indices.packed_shape == want_indices.packed_shape and got_indices.shape == got.node.shape
        assert got_indices.data.tobytes() == want_indices.data.tobytes()
