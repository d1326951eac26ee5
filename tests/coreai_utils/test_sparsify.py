"""sparsify_weights on real converted programs, checked in the Core AI runtime."""

from __future__ import annotations

import numpy as np
import pytest

from coreai_opt.coreai_utils import CompressionWarning, DType, collect_reports, sparsify_weights
from coreai_opt.coreai_utils._encoding import Const, LutToDense, ShiftScale, SparseToDense, constants, decode
from helpers.models import small_net_forward
from helpers.program import decoded_small_net_weights, save_and_run, weight_expressions

SIZES = {"gather_nd": 6400, "matmul": 3072, "conv2d": 1152}
SHAPES = {"gather_nd": (100, 64), "matmul": (48, 64), "conv2d": (16, 8, 3, 3)}

CONFIGS = {
    "50%": dict(),
    "0%": dict(target_sparsity=0.0),
    "37%": dict(target_sparsity=0.37),
    "2:4": dict(target_sparsity=None, n_m_ratio=(2, 4)),
    "1:3-with-tail": dict(target_sparsity=None, n_m_ratio=(1, 3)),
    "blocks-of-4": dict(block_size=4),
    "blocks-of-3-60%": dict(block_size=3, target_sparsity=0.6),
    "50%-int8": dict(quantize_dtype=DType.INT8),
    "50%-uint8": dict(quantize_dtype=DType.UINT8),
    "50%-fp8e4m3": dict(quantize_dtype=DType.FP8_E4M3FN),
    "2:4-fp8e5m2": dict(target_sparsity=None, n_m_ratio=(2, 4), quantize_dtype="fp8_e5m2"),
    "50%-1bit": dict(palettize_nbits=1),
    "50%-4bit": dict(palettize_nbits=4),
    "blocks-of-4-3bit": dict(block_size=4, palettize_nbits=3),
    "70%-8bit": dict(target_sparsity=0.7, palettize_nbits=8),
}


def _sparsify(program, **kwargs):
    with collect_reports() as reports:
        result = sparsify_weights(program, **kwargs)
    return result, reports[0]


def _mask_and_values(expression):
    """(keep mask, values node) of a sparse expression, looking through a trailing shift_scale."""
    sparse = expression.data if isinstance(expression, ShiftScale) else expression
    assert isinstance(sparse, SparseToDense)
    assert sparse.mask.element_type == "ui1"
    return sparse.mask.array.astype(bool), sparse.values


def _structured(options) -> bool:
    return options.get("n_m_ratio") is not None or options.get("block_size") is not None


def _expected_zeros(kind: str, options) -> int:
    size = SIZES[kind]
    if options.get("n_m_ratio") is not None:
        n, m = options["n_m_ratio"]
        shape = SHAPES[kind]
        rows, length = size // shape[1], shape[1]
        full, tail = divmod(length, m)
        return rows * (full * n + (n * tail) // m)
    return int(size * options.get("target_sparsity", 0.5))


def _check_pattern(kind: str, keep: np.ndarray, weight: np.ndarray, options) -> None:
    if options.get("n_m_ratio") is not None:
        n, m = options["n_m_ratio"]
        moved = np.moveaxis(keep, 1, -1).reshape(-1, keep.shape[1])
        full = (moved.shape[1] // m) * m
        groups = moved[:, :full].reshape(moved.shape[0], -1, m)
        assert (groups.sum(axis=-1) == m - n).all(), "every full group keeps exactly m - n"
    elif options.get("block_size") is not None:
        block = options["block_size"]
        rows = keep.reshape(keep.shape[0], -1)
        pruned_blocks = 0
        for start in range(0, rows.shape[0], block):
            chunk = rows[start : start + block]
            assert (chunk == chunk[:1]).all(), "blocks are pruned whole"
            pruned_blocks += int((~chunk[0]).sum())
        n_blocks = -(-rows.shape[0] // block) * rows.shape[1]
        assert pruned_blocks == int(n_blocks * options.get("target_sparsity", 0.5))
    else:
        magnitude = np.abs(weight.astype(np.float64))
        if (~keep).any() and keep.any():
            assert magnitude[~keep].max() <= magnitude[keep].min(), "the smallest magnitudes are pruned"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sparsified_program_runs_and_matches_numpy(name, small_program, tmp_path):
    program, net, inputs = small_program
    options = CONFIGS[name]
    original = {k: decode(v[0]) for k, v in weight_expressions(program).items()}
    before_ir = str(program)
    _, size_before = save_and_run(program, inputs, tmp_path, "original")

    compressed, report = _sparsify(program, **options)

    assert str(program) == before_ir
    expressions = weight_expressions(compressed)
    for kind in SIZES:
        if _structured(options) and kind == "gather_nd":
            assert isinstance(expressions[kind][0], Const), "embeddings are left alone by structured sparsity"
            continue
        keep, values = _mask_and_values(expressions[kind][0])
        assert keep.shape == SHAPES[kind]
        if options.get("block_size") is None:
            assert int((~keep).sum()) == _expected_zeros(kind, options)
        _check_pattern(kind, keep, original[kind], options)
        if options.get("palettize_nbits"):
            assert isinstance(values, LutToDense) and values.indices.element_type == f"ui{options['palettize_nbits']}"
            assert values.indices.shape == (int(keep.sum()),)
        elif options.get("quantize_dtype") is not None:
            codes = values
            while isinstance(codes, ShiftScale):
                codes = codes.data
            assert codes.element_type in {"si8", "ui8", "f8E4M3FN", "f8E5M2"}
        decoded = decode(expressions[kind][0])
        assert (decoded[~keep] == 0).all(), "pruned positions decode to exactly zero"
        if not options.get("palettize_nbits") and options.get("quantize_dtype") is None:
            np.testing.assert_array_equal(decoded[keep], original[kind][keep])

    outputs, size_after = save_and_run(compressed, inputs, tmp_path, "compressed")
    expected = small_net_forward(decoded_small_net_weights(compressed), net, inputs)
    tolerance = 2e-2 if inputs["img"].dtype == np.float16 else 1e-4
    for got, want in zip(outputs, expected, strict=True):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())
    predicted = size_before - report.bytes_before + report.bytes_after
    assert abs(size_after - predicted) <= 1024 + 0.02 * predicted
    mask_consts = [c for e in expressions.values() for c in constants(e[0]) if c.element_type == "ui1"]
    # A mask packs 8 positions per byte; an all-ones mask (nothing pruned) is stored as a splat.
    for mask in mask_consts:
        assert mask.storage_bytes == (1 if mask.array.all() else -(-mask.array.size // 8))


def test_full_sparsity_leaves_a_valid_program_of_zeros(small_net_fp32, tmp_path):
    program, net, inputs = small_net_fp32
    compressed, report = _sparsify(program, target_sparsity=1.0)
    assert all(w.status == "compressed" for w in report.weights)
    outputs, _ = save_and_run(compressed, inputs, tmp_path, "zeros")
    zeros = {"emb": np.zeros((100, 64)), "lin": np.zeros((48, 64)), "conv": np.zeros((16, 8, 3, 3))}
    for got, want in zip(outputs, small_net_forward(zeros, net, inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_structured_sparsity_skips_embeddings_with_a_warning(small_net_fp32):
    program, _, _ = small_net_fp32
    with pytest.warns(CompressionWarning, match=r"skipped weight .*linear and conv weights only.*embedding"):
        _, report = _sparsify(program, target_sparsity=None, n_m_ratio=(2, 4))
    statuses = {w.shape: w.status for w in report.weights}
    assert statuses == {(100, 64): "skipped", (48, 64): "compressed", (16, 8, 3, 3): "compressed"}


def test_block_larger_than_the_channel_count_skips_with_a_warning(small_net_fp32):
    program, _, _ = small_net_fp32
    with pytest.warns(CompressionWarning, match=r"16 output channels are fewer than block_size 32"):
        _, report = _sparsify(program, block_size=32)
    statuses = {w.shape: w.status for w in report.weights}
    assert statuses[(16, 8, 3, 3)] == "skipped" and statuses[(48, 64)] == "compressed"


def _digest(program) -> list:
    return [(const.element_type, const.array.tobytes())
            for kind, found in sorted(weight_expressions(program).items()) for const in constants(found[0])]


@pytest.mark.parametrize("options", [dict(quantize_dtype=DType.INT8), dict(palettize_nbits=4)], ids=["int8", "4bit"])
def test_output_does_not_depend_on_the_threads_that_encode_it(options, small_net_fp32, monkeypatch):
    """Weights are encoded on one thread per CPU (and, for palettized non-zeros, in worker processes):
    the result is the same bits as on one thread."""
    import threading

    from coreai_opt.coreai_utils import _pool, sparsify as sparsify_module
    from coreai_opt.coreai_utils._passes import runner
    from coreai_opt.coreai_utils._passes.sparsify import SparsifyEncoder

    program = small_net_fp32[0]
    monkeypatch.setattr(sparsify_module, "available_cpus", lambda: 1)
    single = _digest(sparsify_weights(program, **options))
    threads = set()
    encode = SparsifyEncoder.__call__

    def recording(self, *args, **kwargs):
        threads.add(threading.current_thread().name)
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(SparsifyEncoder, "__call__", recording)
    monkeypatch.setattr(sparsify_module, "available_cpus", lambda: 4)
    monkeypatch.setattr(runner, "available_cpus", lambda: 4)
    monkeypatch.setattr(_pool, "PROCESS_MIN_VALUES", 0)
    with collect_reports() as reports:
        several = _digest(sparsify_weights(program, **options))
    assert several == single and len(single) >= 3
    assert all(name.startswith("coreai_opt") for name in threads), threads
    assert (reports[0].worker_processes > 0) == ("palettize_nbits" in options)
