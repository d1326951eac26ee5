"""Every documented ValueError, raised with the parameter's name and the allowed values."""

from __future__ import annotations

import pytest

from coreai_opt.coreai_utils import CompressionGranularity, DType
from coreai_opt.coreai_utils._passes.options import PalettizeOptions, SparsifyOptions


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_bits=5), r'"n_bits" must be one of 1, 2, 3, 4, 6, 8\. Got 5\.'),
    (dict(n_bits=True), r'"n_bits" must be one of'),
    (dict(n_bits=4.0), r'"n_bits" must be one of'),
    (dict(lut_dtype=DType.INT4), r'"lut_dtype" must be None or one of .*int8.*uint8.*fp8_e4m3fn.*fp8_e5m2.*Got'),
    (dict(lut_dtype="float16"), r'"lut_dtype" must be None or one of'),
    (dict(granularity=CompressionGranularity.PER_BLOCK), r'"granularity" must be one of .*per_tensor.*Got'),
    (dict(granularity="per_row"), r'"granularity" must be one of'),
    (dict(group_size=0), r'"group_size" must be an integer >= 1\. Got 0\.'),
    (dict(cluster_dim=0), r'"cluster_dim" must be an integer >= 1'),
    (dict(cluster_dim=2, enable_per_channel_scale=True), r'"enable_per_channel_scale" is not supported with "cluster_dim" > 1'),
    (dict(weight_num_threshold=-1), r'"weight_num_threshold" must be an integer >= 0'),
    (dict(num_kmeans_workers=0), r'"num_kmeans_workers" must be an integer >= 1'),
    (dict(rounding_precision=-2), r'"rounding_precision" must be an integer >= 0'),
    (dict(enable_fast_kmeans_mode="yes"), r'"enable_fast_kmeans_mode" must be True or False'),
])
def test_palettize_options_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PalettizeOptions(**kwargs)


def test_palettize_options_accept_strings_and_members():
    options = PalettizeOptions(lut_dtype="int8", granularity="per_grouped_channel")
    assert options.lut_dtype is DType.INT8 and options.granularity is CompressionGranularity.PER_GROUPED_CHANNEL
    assert options.to_dict()["granularity"] == "per_grouped_channel"
    assert DType.INT8 == "int8" and CompressionGranularity.PER_CHANNEL == "per_channel"


@pytest.mark.parametrize("kwargs,message", [
    (dict(target_sparsity=0.5, n_m_ratio=(2, 4)), r'"target_sparsity" and "n_m_ratio" are mutually exclusive'),
    (dict(target_sparsity=None, n_m_ratio=None), r'One of "target_sparsity" or "n_m_ratio" must be set'),
    (dict(quantize_dtype=DType.INT8, palettize_nbits=4), r'"quantize_dtype" and "palettize_nbits" cannot be used together'),
    (dict(quantize_dtype=DType.INT4), r'"quantize_dtype" must be None or one of .*int8.*Got'),
    (dict(palettize_nbits=5), r'"palettize_nbits" must be one of 1, 2, 3, 4, 6, 8\. Got 5\.'),
    (dict(block_size=1), r'"block_size" must be None or an integer > 1\. Got 1\.'),
    (dict(block_size=2.5), r'"block_size" must be None or an integer > 1'),
    (dict(target_sparsity=None, n_m_ratio=(2, 4, 1)), r'"n_m_ratio" must be a pair \(n, m\)'),
    (dict(target_sparsity=None, n_m_ratio=(2.0, 4)), r'"n_m_ratio" must be a pair'),
    (dict(target_sparsity=None, n_m_ratio=(1, 0)), r'"n_m_ratio" must be a pair .* m > 0'),
    (dict(target_sparsity=None, n_m_ratio=(5, 4)), r'"n_m_ratio" must be a pair .*0 <= n <= m'),
    (dict(target_sparsity=None, n_m_ratio=(-1, 4)), r'"n_m_ratio" must be a pair'),
    (dict(target_sparsity=None, n_m_ratio=7), r'"n_m_ratio" must be a pair'),
    (dict(target_sparsity=1.5), r'"target_sparsity" must be a number in \[0, 1\]\. Got 1\.5\.'),
    (dict(target_sparsity=-0.1), r'"target_sparsity" must be a number in \[0, 1\]'),
    (dict(target_sparsity=float("nan")), r'"target_sparsity" must be a number in \[0, 1\]'),
])
def test_sparsify_options_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparsifyOptions(**kwargs)


@pytest.mark.parametrize("sparsity", [0, 0.0, 1, 1.0, 0.37])
def test_sparsity_bounds_are_inclusive(sparsity):
    assert SparsifyOptions(target_sparsity=sparsity).target_sparsity == float(sparsity)
