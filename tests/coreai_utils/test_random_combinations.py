"""Seeded random combinations of arguments and weights, run in the Core AI runtime.

The mode tests pick one argument at a time; users combine them. Each case draws a
weight type, two weights of different distributions and a full set of arguments
from its seed, compresses, saves, runs, and checks what holds for every
combination: the runtime computes exactly the weights ``decode`` reads from our
constants, they are finite, a skipped weight always came with a warning naming it,
and the promised structure is there (palette sizes, sparsity counts, n:m blocks).
A failure names its seed: ``case(seed)`` rebuilds it.
"""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest

from coreai_opt.coreai_utils import (CompressionGranularity, CompressionWarning, DType, collect_reports,
                                     palettize_weights, sparsify_weights)
from coreai_opt.coreai_utils._encoding import decode
from helpers.authoring import ca, const, program
from helpers.program import save_and_run, weight_expressions

TYPES = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}
PERMUTATION = np.array([1, 0], np.uint32)
GRANULARITIES = [CompressionGranularity.PER_TENSOR, CompressionGranularity.PER_CHANNEL,
                 CompressionGranularity.PER_GROUPED_CHANNEL]
LUT_TYPES = [None, DType.INT8, DType.UINT8, DType.FP8_E4M3FN, DType.FP8_E5M2]


def random_weight(rng: np.random.Generator, shape: tuple[int, int], dtype) -> np.ndarray:
    """One of several distributions that real and awkward weights follow."""
    kind = rng.integers(8)
    if kind == 0:
        values = rng.standard_normal(shape) * 10.0 ** rng.uniform(-4, 1)
    elif kind == 1:
        values = rng.laplace(size=shape) * 0.02
    elif kind == 2:  # a few huge outliers in a narrow bulk
        values = rng.standard_normal(shape) * 0.01
        outliers = rng.random(shape) < 0.002
        values[outliers] = rng.standard_normal(int(outliers.sum())) * 50
    elif kind == 3:
        values = rng.choice(rng.standard_normal(int(rng.integers(1, 40))), shape)
    elif kind == 4:  # whole output channels of zeros
        values = rng.standard_normal(shape)
        values[rng.random(shape[0]) < 0.3] = 0
    elif kind == 5:
        values = rng.standard_normal(shape) * (rng.random(shape) < 0.1)
    elif kind == 6:
        values = np.full(shape, rng.standard_normal())
    else:
        values = rng.uniform(-1, 1, shape) * (1e4 if dtype is np.float16 else 1e20)
    return values.astype(dtype)


def palettize_arguments(rng: np.random.Generator) -> dict:
    n_bits = int(rng.choice([1, 2, 3, 4, 6, 8]))
    granularity = GRANULARITIES[rng.integers(len(GRANULARITIES))]
    arguments = {"lut_dtype": LUT_TYPES[rng.integers(len(LUT_TYPES))], "n_bits": n_bits,
                 "granularity": granularity, "enable_fast_kmeans_mode": bool(rng.random() < 0.7),
                 "num_kmeans_workers": int(rng.choice([1, 2, 4]))}
    if granularity == CompressionGranularity.PER_GROUPED_CHANNEL:
        arguments["group_size"] = int(rng.choice([1, 3, 8, 16, 32, 1000]))
    if n_bits <= 4 and rng.random() < 0.25:
        arguments["cluster_dim"] = int(rng.choice([2, 4]))
    elif rng.random() < 0.3:
        arguments["enable_per_channel_scale"] = True
    return arguments


def sparsify_arguments(rng: np.random.Generator) -> dict:
    structure = rng.integers(3)
    if structure == 0:
        arguments = {"target_sparsity": float(rng.choice([0.0, 0.1, 0.5, 0.9, 0.99, 1.0]))}
    elif structure == 1:
        m = int(rng.choice([2, 4, 8, 16]))
        arguments = {"target_sparsity": None, "n_m_ratio": (int(rng.integers(0, m + 1)), m)}
    else:
        arguments = {"target_sparsity": float(rng.choice([0.3, 0.75])), "block_size": int(rng.choice([2, 4, 8]))}
    storage = rng.random()  # how the kept values are stored: quantized, palettized or as they are
    if storage < 0.3:
        arguments["quantize_dtype"] = [DType.INT8, DType.UINT8, DType.FP8_E4M3FN, DType.FP8_E5M2][rng.integers(4)]
    elif storage < 0.55:
        arguments["palettize_nbits"] = int(rng.choice([1, 2, 4, 8]))
    return arguments


def case(seed: int):
    """(verb, arguments, weights, program, inputs) of one seeded case."""
    rng = np.random.default_rng(seed)
    dtype = TYPES[list(TYPES)[rng.integers(len(TYPES))]]
    rows, columns = int(rng.choice([33, 64, 96, 130, 256])), int(rng.choice([32, 48, 64]))
    weights = [random_weight(rng, (rows, columns), dtype) for _ in range(2)]
    verb = "palettize" if rng.random() < 0.6 else "sparsify"
    arguments = palettize_arguments(rng) if verb == "palettize" else sparsify_arguments(rng)

    def build(eye):
        return tuple(ca.batch_matmul(eye, ca.transpose(const(w), PERMUTATION)) for w in weights)

    prog = program(build, {"eye": ((columns, columns), dtype)}, {f"out{i}": ((columns, rows), dtype) for i in range(2)})
    return verb, arguments, weights, prog, {"eye": np.eye(columns, dtype=dtype)}


def compress(verb: str, prog, arguments: dict):
    if verb == "palettize":
        arguments = dict(arguments)
        return palettize_weights(prog, arguments.pop("lut_dtype"), **arguments)
    return sparsify_weights(prog, **arguments)


def check_structure(verb: str, arguments: dict, original: np.ndarray, decoded: np.ndarray) -> None:
    """What the arguments promise about one compressed weight (output channels along axis 0)."""
    if verb == "palettize":
        entries = 2 ** arguments["n_bits"]
        plain = arguments.get("cluster_dim", 1) == 1
        if plain and arguments["granularity"] == CompressionGranularity.PER_TENSOR and \
                not arguments.get("enable_per_channel_scale"):
            assert np.unique(decoded).size <= entries
        if plain and arguments["granularity"] == CompressionGranularity.PER_CHANNEL:
            assert max(np.unique(row).size for row in decoded) <= entries
        return
    zeros = decoded == 0
    if arguments.get("n_m_ratio"):
        n, m = arguments["n_m_ratio"]
        whole = decoded.shape[1] // m * m
        assert (zeros[:, :whole].reshape(decoded.shape[0], -1, m).sum(axis=2) >= n).all()
    elif arguments.get("block_size") is None:
        assert zeros.sum() >= int(original.size * arguments["target_sparsity"])
    if arguments.get("palettize_nbits"):
        assert np.unique(decoded[~zeros]).size <= 2 ** arguments["palettize_nbits"]


#: Seeds whose case asks for vectors that do not tile the output channels: their weights must be
#: skipped, so the check that skips are announced runs (the first 40 cases skip nothing).
SKIPPING = (53, 192)


@pytest.mark.parametrize("seed", [*range(40), *SKIPPING])
def test_random_combination_compresses_runs_and_keeps_its_promises(seed, tmp_path):
    verb, arguments, weights, prog, inputs = case(seed)
    with warnings.catch_warnings(record=True) as caught, collect_reports(snr=False) as reports:
        warnings.simplefilter("always")
        compressed = compress(verb, prog, arguments)
    assert all(issubclass(w.category, CompressionWarning) for w in caught), [str(w.message) for w in caught]
    messages = " ".join(str(w.message) for w in caught)
    rows = reports[0].weights  # in program order, as the weights
    assert len(rows) == 2
    assert (seed in SKIPPING) == any(row.status == "skipped" for row in rows), [row.detail for row in rows]
    for row in rows:
        assert row.status in ("compressed", "skipped")
        if row.status == "skipped":
            assert row.name in messages, f"seed {seed}: {row.name} skipped silently ({row.detail})"

    outputs, _ = save_and_run(compressed, inputs, tmp_path)
    decoded = [decode(expression) for expression in weight_expressions(compressed)["matmul"]]
    tiny = float(ml_dtypes.finfo(inputs["eye"].dtype).tiny)
    for output, weight, original, row in zip(outputs, decoded, weights, rows, strict=True):
        got, want = output.astype(np.float64), weight.T.astype(np.float64)
        assert np.isfinite(got).all() and np.isfinite(want).all(), f"seed {seed}: non-finite weights"
        # Exact up to subnormals the runtime may flush to zero.
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=tiny, err_msg=f"seed {seed}: {verb} {arguments}")
        if row.status == "compressed":
            check_structure(verb, arguments, original.astype(np.float64), weight.astype(np.float64))
