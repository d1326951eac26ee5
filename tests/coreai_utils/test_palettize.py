"""palettize_weights on real converted programs, checked in the Core AI runtime.

Every option of the spec is exercised on an Embedding + Linear + Conv2d net in
float32 and float16: the IR must hold the expected decompression ops, the saved
asset must run in the Core AI runtime and match a numpy forward pass that uses
the weights decoded (in numpy) from the constants actually written to the IR,
and the asset must shrink by the amount the encoding predicts.
"""

from __future__ import annotations

import numpy as np
import pytest

from coreai_opt.coreai_utils import (
    CompressionGranularity,
    CompressionWarning,
    DType,
    collect_reports,
    palettize_weights,
)
from coreai_opt.coreai_utils._encoding import Const, LutToDense, ShiftScale, constants
from helpers.models import small_net_forward
from helpers.program import decoded_small_net_weights, save_and_run, weight_expressions

G = CompressionGranularity

CONFIGS = {
    "1bit": dict(n_bits=1),
    "2bit": dict(n_bits=2),
    "3bit": dict(n_bits=3),
    "4bit": dict(n_bits=4),
    "6bit": dict(n_bits=6),
    "8bit": dict(n_bits=8),
    "4bit-exact": dict(n_bits=4, enable_fast_kmeans_mode=False),
    "4bit-per-channel": dict(n_bits=4, granularity=G.PER_CHANNEL),
    "4bit-groups-16": dict(n_bits=4, granularity=G.PER_GROUPED_CHANNEL, group_size=16),
    "2bit-groups-8": dict(n_bits=2, granularity="per_grouped_channel", group_size=8),
    "4bit-int8-lut": dict(lut_dtype=DType.INT8, granularity=G.PER_GROUPED_CHANNEL, group_size=16),
    "4bit-uint8-lut": dict(lut_dtype=DType.UINT8),
    "4bit-fp8e4m3-lut": dict(lut_dtype=DType.FP8_E4M3FN, granularity=G.PER_CHANNEL),
    "4bit-fp8e5m2-lut": dict(lut_dtype="fp8_e5m2"),
    "4bit-cluster-dim-2": dict(cluster_dim=2),
    "3bit-cluster-dim-4-groups-8": dict(n_bits=3, cluster_dim=4, granularity=G.PER_GROUPED_CHANNEL, group_size=8),
    "4bit-cluster-dim-2-per-channel": dict(cluster_dim=2, granularity=G.PER_CHANNEL),
    "4bit-per-channel-scale": dict(enable_per_channel_scale=True),
    "2bit-per-channel-scale-int8-lut": dict(n_bits=2, enable_per_channel_scale=True, lut_dtype=DType.INT8),
}


def _palettize(program, **kwargs):
    kwargs.setdefault("lut_dtype", None)
    lut_dtype = kwargs.pop("lut_dtype")
    with collect_reports() as reports:
        result = palettize_weights(program, lut_dtype, num_kmeans_workers=2, **kwargs)
    return result, reports[0]


def _codes(node):
    """The stored codes under a (possibly two-step) dequantization."""
    while isinstance(node, ShiftScale):
        node = node.data
    return node


def _lut_node(expression):
    node = expression.data if isinstance(expression, ShiftScale) and isinstance(expression.data, LutToDense) \
        else expression
    assert isinstance(node, LutToDense), f"expected lut_to_dense, got {type(node).__name__}"
    return node


def _check_structure(expression, weight_shape, out_axis, options, weight_type):
    """The decompression graph in the IR has the requested shape and types."""
    n_bits = options.get("n_bits", 4)
    cluster_dim = options.get("cluster_dim", 1)
    lut_node = _lut_node(expression)
    assert lut_node.indices.element_type == f"ui{n_bits}"
    index_shape = list(weight_shape)
    index_shape[out_axis] //= cluster_dim
    assert lut_node.indices.shape == tuple(index_shape)
    assert lut_node.axis == out_axis
    lut = lut_node.lut
    lut_shape = _codes(lut).shape
    assert lut_shape[-2:] == (2**n_bits, cluster_dim)
    assert all(size == 1 for axis, size in enumerate(lut_shape[:-2]) if axis != out_axis)
    groups = lut_shape[out_axis]
    granularity = options.get("granularity", G.PER_TENSOR)
    channels = weight_shape[out_axis]
    if granularity == G.PER_TENSOR:
        assert groups == 1
    elif granularity == G.PER_CHANNEL:
        assert groups == channels // cluster_dim
    else:
        assert channels % groups == 0 and (channels // groups) % cluster_dim == 0
    if options.get("lut_dtype") is not None:
        assert isinstance(lut, ShiftScale)
        stored = DType(options["lut_dtype"])
        assert _codes(lut).element_type == {"int8": "si8", "uint8": "ui8", "fp8_e4m3fn": "f8E4M3FN",
                                            "fp8_e5m2": "f8E5M2"}[stored.value]
        assert lut.scale.shape[out_axis] == groups  # one scale per LUT
    else:
        assert isinstance(lut, Const) and lut.element_type == weight_type
    if options.get("enable_per_channel_scale"):
        assert isinstance(expression, ShiftScale) and expression.scale.shape[out_axis] == channels


@pytest.mark.parametrize("name", list(CONFIGS))
def test_palettized_program_runs_and_matches_numpy(name, small_program, tmp_path):
    program, net, inputs = small_program
    options = CONFIGS[name]
    before_ir = str(program)
    _, size_before = save_and_run(program, inputs, tmp_path, "original")

    compressed, report = _palettize(program, **options)

    assert str(program) == before_ir, "in_place=False must not touch the input program"
    weight_type = "f16" if inputs["img"].dtype == np.float16 else "f32"
    expressions = weight_expressions(compressed)
    shapes = {"gather_nd": ((100, 64), 0), "conv2d": ((16, 8, 3, 3), 0), "matmul": ((48, 64), 0)}
    for kind, (shape, out_axis) in shapes.items():
        _check_structure(expressions[kind][0], shape, out_axis, options, weight_type)

    outputs, size_after = save_and_run(compressed, inputs, tmp_path, "compressed")
    expected = small_net_forward(decoded_small_net_weights(compressed), net, inputs)
    tolerance = 2e-2 if weight_type == "f16" else 1e-4
    for got, want in zip(outputs, expected, strict=True):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())

    assert len(report.compressed) == 3 and not report.skipped
    predicted = size_before - report.bytes_before + report.bytes_after
    assert abs(size_after - predicted) <= 1024 + 0.02 * predicted
    n_bits = options.get("n_bits", 4)
    index_bytes = sum(c.storage_bytes for e in expressions.values() for c in constants(e[0])
                      if c.element_type == f"ui{n_bits}")
    cluster_dim = options.get("cluster_dim", 1)
    assert index_bytes == sum(-(-(size // cluster_dim) * n_bits // 8) for size in (6400, 1152, 3072))
    assert size_after < size_before


def test_group_size_that_does_not_divide_is_adjusted_with_a_warning(small_net_fp32):
    program, _, _ = small_net_fp32
    with pytest.warns(CompressionWarning, match=r"100 output channels are not divisible by group_size 32.*groups of 25"):
        compressed, report = _palettize(program, granularity=G.PER_GROUPED_CHANNEL, group_size=32)
    embedding = _lut_node(weight_expressions(compressed)["gather_nd"][0])
    assert embedding.lut.shape[0] == 4  # 100 rows in groups of 25
    assert len(report.compressed) == 3


def test_cluster_dim_that_does_not_divide_skips_that_weight_with_a_warning(small_net_fp32):
    program, _, _ = small_net_fp32
    with pytest.warns(CompressionWarning, match=r"skipped weight .*not divisible by cluster_dim 3"):
        _, report = _palettize(program, cluster_dim=3)
    # 48 linear and 16 conv channels... 48 is divisible by 3, 16 and 100 are not.
    statuses = {w.shape: w.status for w in report.weights}
    assert statuses[(48, 64)] == "compressed"
    assert statuses[(16, 8, 3, 3)] == "skipped" and statuses[(100, 64)] == "skipped"


def test_weight_num_threshold_is_strictly_more_than(small_net_fp32):
    program, _, _ = small_net_fp32
    _, report = _palettize(program, weight_num_threshold=3072)
    statuses = {w.shape: (w.status, w.detail) for w in report.weights}
    assert statuses[(48, 64)][0] == "skipped" and "3072 elements <= weight_num_threshold 3072" in statuses[(48, 64)][1]
    assert statuses[(100, 64)][0] == "compressed"
    assert statuses[(16, 8, 3, 3)][0] == "skipped"


def test_in_place_modifies_and_returns_the_same_program(small_net_fp32):
    import copy

    program = copy.deepcopy(small_net_fp32[0])
    result = palettize_weights(program, None, in_place=True)
    assert result is program
    assert "coreai.lut_to_dense" in str(program)


def test_output_is_identical_for_any_worker_count(small_net_fp32, monkeypatch):
    from coreai_opt.coreai_utils._passes import runner

    monkeypatch.setattr(runner, "available_cpus", lambda: 64)  # really run 3 and 8 threads
    program, _, _ = small_net_fp32
    results = []
    for workers in (1, 2, 3, 8):
        compressed = palettize_weights(program, None, granularity=G.PER_CHANNEL, num_kmeans_workers=workers)
        expressions = weight_expressions(compressed)
        results.append([c.array.tobytes() for kind in sorted(expressions) for c in constants(expressions[kind][0])])
    assert all(r == results[0] for r in results[1:])


def test_workers_are_capped_at_the_available_cpus(small_net_fp32, monkeypatch):
    from coreai_opt.coreai_utils import _pool
    from coreai_opt.coreai_utils._passes import runner

    def no_pool(*args, **kwargs):
        raise AssertionError("no threads or worker processes on one CPU")

    monkeypatch.setattr(runner, "available_cpus", lambda: 1)
    monkeypatch.setattr(runner, "ThreadPoolExecutor", no_pool)
    monkeypatch.setattr(_pool, "ThreadPoolExecutor", no_pool)
    monkeypatch.setattr(_pool, "PROCESS_MIN_VALUES", 0)  # children would be used on more CPUs
    monkeypatch.setattr(_pool, "avx512_sort_targets", lambda: ())  # Zen 4 would sort in one child (test_pool)
    compressed = palettize_weights(small_net_fp32[0], None, granularity=G.PER_CHANNEL, num_kmeans_workers=8)
    assert "coreai.lut_to_dense" in str(compressed)
    assert runner.usable_threads(8) == 1
    monkeypatch.setattr(runner, "available_cpus", lambda: 2)
    assert [runner.usable_threads(n) for n in (1, 2, 3, 8)] == [1, 2, 2, 2]


def test_workers_share_a_module_serialised_to_disk(small_net_fp32, monkeypatch):
    from coreai_opt.coreai_utils._ir import constants as ir_constants
    from coreai_opt.coreai_utils._passes import runner

    monkeypatch.setattr(runner, "available_cpus", lambda: 64)

    monkeypatch.setattr(ir_constants, "_IN_MEMORY_LIMIT", -1)  # every module goes through the temp file
    program, _, _ = small_net_fp32
    results = []
    for workers in (1, 4):
        expressions = weight_expressions(palettize_weights(program, None, num_kmeans_workers=workers))
        results.append([c.array.tobytes() for kind in sorted(expressions) for c in constants(expressions[kind][0])])
    assert results[0] == results[1]


def test_a_blob_streamed_to_the_wrong_weight_makes_the_pass_encode_again(small_net_fp32, monkeypatch):
    from coreai_opt.coreai_utils import _ir
    from coreai_opt.coreai_utils._passes import runner

    program, _, _ = small_net_fp32
    reference = weight_expressions(palettize_weights(program, None, granularity=G.PER_CHANNEL, num_kmeans_workers=1))
    monkeypatch.setattr(runner, "available_cpus", lambda: 64)
    real = _ir.resource_blobs

    def misplaced(module):  # the first blob written is announced as the second one
        (_, first_size), (second, _), *_ = real(module)
        return [(second, first_size)]

    monkeypatch.setattr(_ir, "resource_blobs", misplaced)
    passes = []
    encode_all = runner._encode_all
    monkeypatch.setattr(runner, "_encode_all", lambda *args, **kwargs: (passes.append(kwargs.get("stream", True)),
                                                                        encode_all(*args, **kwargs))[1])
    compressed = palettize_weights(program, None, granularity=G.PER_CHANNEL, num_kmeans_workers=4)
    assert passes == [True, False]  # streamed, then encoded again from the written module
    expressions = weight_expressions(compressed)
    assert [c.array.tobytes() for kind in sorted(expressions) for c in constants(expressions[kind][0])] == \
        [c.array.tobytes() for kind in sorted(reference) for c in constants(reference[kind][0])]


# A weight stored (in, out), read by a matmul directly: its output axis is the last, so each group
# of output channels is a block of columns, clustered in storage order without a transpose.
_COLUMN_CONFIGS = {
    "tensor": dict(),
    "groups-of-8-int8-lut": dict(lut_dtype="int8", granularity=G.PER_GROUPED_CHANNEL, group_size=8),
    "channel-scale-6-bit": dict(n_bits=6, granularity=G.PER_CHANNEL, enable_per_channel_scale=True),
    "groups-of-16-in-worker-processes": dict(granularity=G.PER_GROUPED_CHANNEL, group_size=16),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("name", list(_COLUMN_CONFIGS))
def test_weights_with_a_trailing_output_axis_group_columns_and_run(name, dtype, tmp_path, monkeypatch):
    from coreai_opt.coreai_utils import _pool
    from coreai_opt.coreai_utils._encoding import decode
    from coreai_opt.coreai_utils._kernels.kmeans1d import palettize_rows
    from coreai_opt.coreai_utils._passes import runner
    from helpers.authoring import ca, const, program

    if "worker-processes" in name:
        monkeypatch.setattr(runner, "available_cpus", lambda: 2)
        monkeypatch.setattr(_pool, "PROCESS_MIN_VALUES", 0)
    options = dict(_COLUMN_CONFIGS[name])
    lut_dtype = options.pop("lut_dtype", None)
    rng = np.random.default_rng(5)
    values = (rng.standard_normal((48, 64)) * np.linspace(0.2, 3.0, 64)).astype(dtype)  # (in, out)
    x = rng.standard_normal((3, 48)).astype(dtype)
    prog = program(lambda x: ca.batch_matmul(x, const(values)), {"x": ((3, 48), dtype)}, ((3, 64), dtype))
    with collect_reports() as reports:
        compressed = palettize_weights(prog, lut_dtype, num_kmeans_workers=2, **options)
    assert [w.status for w in reports[0].weights] == ["compressed"]
    if "worker-processes" in name:
        assert reports[0].worker_processes >= 1

    [expression] = weight_expressions(compressed)["matmul"]
    lut_node = expression.data if isinstance(expression, ShiftScale) else expression
    assert isinstance(lut_node, LutToDense) and lut_node.axis == 1
    decoded = decode(expression).astype(np.float64)
    [got], _ = save_and_run(compressed, {"x": x}, tmp_path)
    want = x.astype(np.float64) @ decoded
    tolerance = 2e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tolerance, atol=tolerance * np.abs(want).max())

    if lut_dtype is None and not options.get("enable_per_channel_scale"):
        # Each LUT and its indices are exactly the kernel's result on that group's columns.
        lut = decode(lut_node.lut).reshape(-1, 2 ** options.get("n_bits", 4))
        indices = lut_node.indices.array
        size = 64 // lut.shape[0]
        for group in range(lut.shape[0]):
            columns = slice(group * size, (group + 1) * size)
            ref_lut, ref_indices = palettize_rows(values[:, columns].T.reshape(1, -1), lut.shape[1], round_decimals=4,
                                                  to_storage=lambda c: c.astype(dtype).astype(np.float64))
            np.testing.assert_array_equal(lut[group], ref_lut[0])
            np.testing.assert_array_equal(indices[:, columns].T.reshape(-1), ref_indices[0])


def test_reports_measure_snr_unless_asked_not_to(small_net_fp32):
    program = small_net_fp32[0]
    with collect_reports() as with_snr, collect_reports(snr=False) as without:
        palettize_weights(program, None)
    assert with_snr[0] is without[0]  # one report, handed to both collectors
    with collect_reports(snr=False) as only_without:
        palettize_weights(program, None)
    compressed = [w for w in with_snr[0].weights if w.status == "compressed"]
    assert compressed and all(w.snr_db is not None and w.snr_db > 5 for w in compressed)
    assert all(w.snr_db is None for w in only_without[0].weights)


def _equal_weights_program():
    """Six float32 weights, four of one shape and two of another, each an output of its own matmul."""
    from helpers.authoring import ca, const, program

    rng = np.random.default_rng(11)
    shapes = [(64, 32)] * 4 + [(48, 32)] * 2
    weights = [(rng.standard_t(4, shape) * 0.05).astype(np.float32) for shape in shapes]
    permutation = np.array([1, 0], np.uint32)

    def build(eye):
        return tuple(ca.batch_matmul(eye, ca.transpose(const(w), permutation)) for w in weights)

    outputs = {f"w{i}": ((32, shape[0]), np.float32) for i, shape in enumerate(shapes)}
    return program(build, {"eye": ((32, 32), np.float32)}, outputs), {"eye": np.eye(32, dtype=np.float32)}


@pytest.mark.parametrize("options, together_batches", [
    (dict(), [2, 4]),
    (dict(n_bits=6, enable_per_channel_scale=True), [2, 4]),
    (dict(lut_dtype=DType.INT8, n_bits=3), [2, 4]),
    (dict(granularity=G.PER_CHANNEL), [6]),
    (dict(granularity=G.PER_GROUPED_CHANNEL, group_size=16, n_bits=3, lut_dtype=DType.INT8), [6]),
], ids=["4bit", "6bit-pcs", "3bit-int8", "per-channel", "groups-16-int8"])
def test_weights_whose_groups_have_one_length_are_clustered_together_with_unchanged_results(
        options, together_batches, monkeypatch, tmp_path):
    """Per-tensor weights of one size, and per-channel or grouped weights whose groups hold as many
    values, share one kernel call; each result is the bits it gets alone, and the program runs to
    the decoded weights."""
    from coreai_opt.coreai_utils._encoding import decode
    from coreai_opt.coreai_utils._passes.palettize import PalettizeEncoder

    program, inputs = _equal_weights_program()
    options = dict(options)
    lut_dtype = options.pop("lut_dtype", None)
    batches = []
    encode_batch = PalettizeEncoder.encode_batch

    def recording(self, weights, *args):
        batches.append(len(weights))
        return encode_batch(self, weights, *args)

    monkeypatch.setattr(PalettizeEncoder, "encode_batch", recording)
    together = palettize_weights(program, lut_dtype, **options)
    assert sorted(batches) == together_batches
    monkeypatch.setattr(PalettizeEncoder, "batch_key", lambda self, shape, role, element_type: None)
    batches.clear()
    alone = palettize_weights(program, lut_dtype, **options)
    assert batches == [1] * 6

    def digest(compressed):
        return [(c.element_type, c.array.tobytes()) for e in weight_expressions(compressed)["matmul"]
                for c in constants(e)]

    assert digest(together) == digest(alone) and len(digest(alone)) >= 12
    outputs, _ = save_and_run(together, inputs, tmp_path)
    expected = [decode(e).T for e in weight_expressions(together)["matmul"]]
    assert len(outputs) == len(expected) == 6
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)
