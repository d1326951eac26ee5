"""The public functions: spec signatures, validation before any work, inputs left alone."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest

from coreai_opt.coreai_utils import CompressionGranularity, DType, palettize_weights, sparsify_weights

PALETTIZE_SIGNATURE = ("(coreai_program, lut_dtype, n_bits=4, granularity=<CompressionGranularity.PER_TENSOR: "
                       "'per_tensor'>, group_size=32, cluster_dim=1, enable_per_channel_scale=False, "
                       "weight_num_threshold=1024, num_kmeans_workers=4, enable_fast_kmeans_mode=True, "
                       "rounding_precision=4, in_place=False)")
SPARSIFY_SIGNATURE = ("(coreai_program, target_sparsity=0.5, block_size=None, n_m_ratio=None, quantize_dtype=None, "
                      "palettize_nbits=None, weight_num_threshold=1024, in_place=False)")


def _plain(function):
    signature = inspect.signature(function)
    return str(signature.replace(parameters=[p.replace(annotation=inspect.Parameter.empty)
                                             for p in signature.parameters.values()],
                                 return_annotation=inspect.Signature.empty))


def test_signatures_match_the_spec():
    assert _plain(palettize_weights) == PALETTIZE_SIGNATURE
    assert _plain(sparsify_weights) == SPARSIFY_SIGNATURE


@pytest.mark.parametrize("call", [
    lambda p: palettize_weights(p, None, n_bits=7),
    lambda p: palettize_weights(p, "int4"),
    lambda p: palettize_weights(p, None, granularity="per_block"),
    lambda p: palettize_weights(p, None, cluster_dim=2, enable_per_channel_scale=True),
    lambda p: palettize_weights(p, None, in_place="no"),
    lambda p: sparsify_weights(p, target_sparsity=0.5, n_m_ratio=(2, 4)),
    lambda p: sparsify_weights(p, block_size=1),
    lambda p: sparsify_weights(p, quantize_dtype=DType.INT8, palettize_nbits=2),
])
@pytest.mark.parametrize("in_place", [False, True])
def test_value_errors_come_before_any_work_and_leave_the_program_alone(call, in_place, small_net_fp32):
    program = copy.deepcopy(small_net_fp32[0])
    before = str(program)
    with pytest.raises(ValueError):
        call(program)
    assert str(program) == before


@pytest.mark.parametrize("wrong,hint", [
    ("model.aimodel", "AIModelAsset.load"),
    (None, "AIProgram"),
    (np.zeros(3), "AIProgram"),
])
def test_wrong_program_types_get_a_type_error_with_a_hint(wrong, hint):
    with pytest.raises(TypeError, match=hint):
        palettize_weights(wrong, None)
    with pytest.raises(TypeError, match=hint):
        sparsify_weights(wrong)


def test_a_torch_module_gets_a_conversion_hint():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="Convert the torch module"):
        palettize_weights(torch.nn.Linear(4, 4), None)


def test_an_asset_gets_a_hint_to_use_its_program(small_net_fp32, tmp_path):
    asset = small_net_fp32[0].save_asset(tmp_path / "m.aimodel")
    with pytest.raises(TypeError, match=r"asset\.program"):
        sparsify_weights(asset)


def test_the_input_program_is_never_modified_without_in_place(small_net_fp32):
    program = small_net_fp32[0]
    before = str(program)
    result = palettize_weights(program, DType.INT8, granularity=CompressionGranularity.PER_CHANNEL)
    assert result is not program and str(program) == before and str(result) != before
