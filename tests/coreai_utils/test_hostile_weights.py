"""Hostile weights through every compression mode, checked in the Core AI runtime.

Each program multiplies an identity matrix by the transpose of every hostile
weight, so each output is exactly the decompressed weight: the runtime result
must be finite and equal what ``decode`` computes from the constants we wrote.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from coreai_opt.coreai_utils import CompressionWarning, DType, collect_reports, palettize_weights, sparsify_weights
from coreai_opt.coreai_utils._encoding import decode
from helpers.authoring import ca, const, program
from helpers.program import save_and_run, weight_expressions

DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}
SHAPE = (64, 32)
PERMUTATION = np.array([1, 0], np.uint32)


def hostile_weights(dtype) -> dict[str, np.ndarray]:
    """Weights that broke earlier implementations, all finite, in ``dtype``."""
    info = ml_dtypes.finfo(dtype)
    big, tiny = float(info.max), float(info.smallest_subnormal)
    rng = np.random.default_rng(7)
    signs = rng.choice([-1.0, 1.0], SHAPE)
    cases = {
        "normal": rng.standard_normal(SHAPE) * 0.05,
        "near_max": signs * rng.uniform(0.5, 1.0, SHAPE) * big,
        "above_6_55": signs * rng.uniform(6.55, 1000.0, SHAPE),
        "above_65504": signs * rng.uniform(65504.0, 1e30 if big > 1e30 else big, SHAPE),
        "subnormal": signs * rng.integers(0, 40, SHAPE) * tiny,
        "zeros": np.zeros(SHAPE),
        "repeated": np.full(SHAPE, 0.3),
        "few_distinct": rng.choice([-1.0, 0.5, 2.0], SHAPE),
        "wide_range": signs * 10.0 ** rng.uniform(np.log10(float(info.tiny)) + 1, np.log10(big) - 1, SHAPE),
    }
    return {name: values.astype(dtype) for name, values in cases.items()}


def hostile_program(dtype):
    weights = hostile_weights(dtype)
    # Threshold edge: exactly 1024 elements is not compressed, 1025 is.
    edge = {"edge_1024": np.random.default_rng(1).standard_normal((32, 32)).astype(dtype),
            "edge_1025": np.random.default_rng(2).standard_normal((41, 25)).astype(dtype)}

    def build(eye32, eye25):
        outs = [ca.batch_matmul(eye32, ca.transpose(const(w), PERMUTATION)) for w in weights.values()]
        outs.append(ca.batch_matmul(eye32, ca.transpose(const(edge["edge_1024"]), PERMUTATION)))
        outs.append(ca.batch_matmul(eye25, ca.transpose(const(edge["edge_1025"]), PERMUTATION)))
        return tuple(outs)

    outputs = {name: ((32, 64), dtype) for name in weights}
    outputs |= {"edge_1024": ((32, 32), dtype), "edge_1025": ((25, 41), dtype)}
    inputs = {"eye32": np.eye(32, dtype=dtype), "eye25": np.eye(25, dtype=dtype)}
    prog = program(build, {"eye32": ((32, 32), dtype), "eye25": ((25, 25), dtype)}, outputs)
    return prog, inputs, list(outputs)


MODES = {
    "pal2-tensor": lambda p: palettize_weights(p, None, n_bits=2),
    "pal4-channel": lambda p: palettize_weights(p, None, granularity="per_channel"),
    "pal8-groups16-exact": lambda p: palettize_weights(p, None, n_bits=8, granularity="per_grouped_channel",
                                                       group_size=16, enable_fast_kmeans_mode=False),
    "pal4-cluster2": lambda p: palettize_weights(p, None, cluster_dim=2),
    "pal4-int8-lut": lambda p: palettize_weights(p, DType.INT8, granularity="per_grouped_channel", group_size=16),
    "pal3-fp8-lut": lambda p: palettize_weights(p, DType.FP8_E4M3FN, n_bits=3),
    "pal6-channel-scale": lambda p: palettize_weights(p, DType.UINT8, n_bits=6, enable_per_channel_scale=True),
    "pal4-uint8-lut": lambda p: palettize_weights(p, DType.UINT8, granularity="per_channel"),
    "sparse50": lambda p: sparsify_weights(p),
    "sparse-2of4": lambda p: sparsify_weights(p, target_sparsity=None, n_m_ratio=(2, 4)),
    "sparse-block4": lambda p: sparsify_weights(p, block_size=4),
    "sparse50-int8": lambda p: sparsify_weights(p, quantize_dtype=DType.INT8),
    "sparse50-uint8": lambda p: sparsify_weights(p, quantize_dtype=DType.UINT8),
    "sparse50-fp8": lambda p: sparsify_weights(p, quantize_dtype=DType.FP8_E5M2),
    "sparse50-pal4": lambda p: sparsify_weights(p, palettize_nbits=4),
}


@pytest.fixture(scope="module", params=list(DTYPES))
def hostile(request):
    return hostile_program(DTYPES[request.param])


@pytest.mark.parametrize("mode", list(MODES))
def test_hostile_weights_compress_and_run_to_finite_exact_outputs(mode, hostile, tmp_path):
    prog, inputs, names = hostile
    with collect_reports() as reports:
        compressed = MODES[mode](prog)
    statuses = {w.shape: w.status for w in reports[0].weights}
    # 1024 elements is not "more than" the threshold; the 1025-element weight has 41 (odd) output
    # channels, which vectors of 2 cannot tile, so it is skipped there.
    edge_status = "skipped" if mode == "pal4-cluster2" else "compressed"
    assert statuses[(32, 32)] == "skipped" and statuses[(41, 25)] == edge_status
    assert sum(w.status == "compressed" for w in reports[0].weights) == len(names) - 1 - (edge_status == "skipped")
    outputs, _ = save_and_run(compressed, inputs, tmp_path)
    expected = [decode(e).T for e in weight_expressions(compressed)["matmul"]]
    assert len(outputs) == len(expected) == len(names)
    dtype = inputs["eye32"].dtype
    tiny = float(ml_dtypes.finfo(dtype).tiny)
    for name, got, want in zip(names, outputs, expected, strict=True):
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        assert np.isfinite(got64).all(), f"{mode}: non-finite output for {name}"
        assert np.isfinite(want64).all()
        # Exact up to subnormals the runtime may flush to zero.
        np.testing.assert_allclose(got64, want64, rtol=1e-6, atol=tiny, err_msg=f"{mode}: {name}")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("compress", [lambda p: palettize_weights(p, None), lambda p: sparsify_weights(p)])
def test_non_finite_weights_are_skipped_with_a_warning_and_left_exact(bad, compress):
    values = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    values[3, 5] = bad
    clean = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    prog = program(lambda x: (ca.batch_matmul(x, ca.transpose(const(values), PERMUTATION)),
                              ca.batch_matmul(x, ca.transpose(const(clean), PERMUTATION))),
                   {"x": ((2, 32), np.float32)}, {"a": ((2, 64), np.float32), "b": ((2, 64), np.float32)})
    with pytest.warns(CompressionWarning, match=r"skipped weight .* contains 1 NaN/Inf values"):
        with collect_reports() as reports:
            compressed = compress(prog)
    assert [w.status for w in reports[0].weights] == ["skipped", "compressed"] or \
        sorted(w.status for w in reports[0].weights) == ["compressed", "skipped"]
    kept = [decode(e) for e in weight_expressions(compressed)["matmul"]]
    untouched = next(k for k in kept if not np.isfinite(k).all())
    np.testing.assert_array_equal(untouched, values)
