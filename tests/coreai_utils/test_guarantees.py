"""Guarantees: nothing half-changed, deterministic, no hangs, several graphs, idempotent."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from coreai_opt.coreai_utils import _pool, collect_reports, palettize_weights, sparsify_weights
from coreai_opt.coreai_utils._ir import ProgramEditor
from coreai_opt.coreai_utils._passes import palettize as palettize_pass
from helpers.authoring import ca, const, program, weight
from helpers.program import fingerprint, save_and_run

PERMUTATION = np.array([1, 0], np.uint32)


class Injected(RuntimeError):
    """The failure a test injects."""


def _fail_on_call(number: int, original):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            raise Injected(f"injected failure on call {number}")
        return original(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("in_place", [True, False])
def test_a_failure_while_rewriting_leaves_the_program_exactly_as_it_was(in_place, small_net_fp32, monkeypatch):
    prog = copy.deepcopy(small_net_fp32[0])
    before = fingerprint(prog)
    monkeypatch.setattr(ProgramEditor, "insert", _fail_on_call(2, ProgramEditor.insert))
    with pytest.raises(Injected):
        palettize_weights(prog, None, in_place=in_place)
    assert fingerprint(prog) == before


@pytest.mark.parametrize("in_place", [True, False])
def test_a_failure_while_encoding_leaves_the_program_exactly_as_it_was(in_place, small_net_fp32, monkeypatch):
    prog = copy.deepcopy(small_net_fp32[0])
    before = fingerprint(prog)
    monkeypatch.setattr(palettize_pass, "palettize_rows", _fail_on_call(3, palettize_pass.palettize_rows))
    with pytest.raises(Injected):
        palettize_weights(prog, None, in_place=in_place, num_kmeans_workers=2)
    assert fingerprint(prog) == before


def test_in_place_failure_then_success_gives_the_same_result_as_a_clean_run(small_net_fp32, monkeypatch):
    clean = palettize_weights(small_net_fp32[0], None)
    prog = copy.deepcopy(small_net_fp32[0])
    with monkeypatch.context() as patch:
        patch.setattr(ProgramEditor, "insert", _fail_on_call(3, ProgramEditor.insert))
        with pytest.raises(Injected):
            palettize_weights(prog, None, in_place=True)
    palettize_weights(prog, None, in_place=True)
    assert fingerprint(prog)[1] == [c for c in fingerprint(clean)[1]]


_DETERMINISM_SCRIPT = textwrap.dedent("""
    import hashlib, sys, warnings
    warnings.simplefilter("ignore")
    sys.path.insert(0, {tests!r})
    from helpers.models import convert, small_net
    from helpers.program import weight_expressions
    from coreai_opt.coreai_utils import palettize_weights
    from coreai_opt.coreai_utils._encoding import constants
    from coreai_opt.coreai_utils import _pool
    _pool.PROCESS_MIN_VALUES = 0  # worker processes even for this small net, started from a script
    net, args, _ = small_net()                # with no main guard (it must not run again in them)
    from coreai_opt.coreai_utils import collect_reports
    with collect_reports() as reports:
        result = palettize_weights(convert(net, args), None, granularity="per_channel",
                                   num_kmeans_workers=int(sys.argv[1]))
    digest = hashlib.sha256()
    for kind, found in sorted(weight_expressions(result).items()):
        for const in constants(found[0]):
            digest.update(const.element_type.encode()); digest.update(const.array.tobytes())
    print(digest.hexdigest(), reports[0].worker_processes)
""")


def test_output_is_identical_across_processes_and_worker_counts(tmp_path):
    import pathlib

    script = tmp_path / "determinism.py"
    script.write_text(_DETERMINISM_SCRIPT.format(tests=str(pathlib.Path(__file__).parents[1])))
    runs = {workers: subprocess.run([sys.executable, str(script), str(workers)], capture_output=True, text=True,
                                    check=True, timeout=300).stdout.split()[-2:] for workers in (1, 3, 8)}
    digests = {digest for digest, _ in runs.values()}
    assert len(digests) == 1 and len(next(iter(digests))) == 64
    several_cpus = len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) > 1
    # One worker clusters in this process, except where sorting goes to processes without AVX-512 (Zen 4).
    one_worker_in_a_child = bool(_pool.avx512_sort_targets())
    assert [int(runs[w][1]) > 0 for w in (1, 3, 8)] == [one_worker_in_a_child, several_cpus, several_cpus]


_NO_HANG_SCRIPT = textwrap.dedent("""
    import asyncio, pathlib, sys, tempfile, time, warnings
    warnings.simplefilter("ignore")
    sys.path.insert(0, {tests!r})
    import numpy as np
    from helpers.models import convert, small_net
    from coreai_opt.coreai_utils import palettize_weights
    a = np.random.default_rng(0).standard_normal((1500, 1500))
    (a @ a).sum()  # BLAS / OpenMP threads are now alive in this process
    net, args, inputs = small_net()
    program = convert(net, args)
    import coreai.runtime as rt
    async def run_once():  # the Core AI runtime has run a model in this process
        with tempfile.TemporaryDirectory() as d:
            asset = program.save_asset(pathlib.Path(d) / "m.aimodel")
            async with asset.executable() as model:
                f = model.load_function("main")
                await f(inputs={{k: rt.NDArray(v) for k, v in inputs.items()}})
    asyncio.run(run_once())
    slowest = 0.0
    for _ in range(50):
        start = time.perf_counter()
        palettize_weights(program, None, granularity="per_channel", num_kmeans_workers=4)
        slowest = max(slowest, time.perf_counter() - start)
    from coreai_opt.coreai_utils import _pool
    _pool.PROCESS_MIN_VALUES = 0  # and worker processes started while all those threads exist
    for _ in range(5):
        start = time.perf_counter()
        palettize_weights(program, None, granularity="per_channel", num_kmeans_workers=4)
        slowest = max(slowest, time.perf_counter() - start)
    print("ok", round(slowest, 3), flush=True)
    import os; os._exit(0)
""")


def test_fifty_threaded_runs_after_blas_and_the_runtime_never_hang(tmp_path):
    import pathlib

    script = tmp_path / "no_hang.py"
    script.write_text(_NO_HANG_SCRIPT.format(tests=str(pathlib.Path(__file__).parents[1])))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    status, slowest = done.stdout.split()[-2:]  # the converter prints a banner first
    assert status == "ok" and float(slowest) < 30


def _two_graph_program():
    first, second, shared = weight((64, 32), 1), weight((48, 32), 2), weight((40, 32), 3)

    def main(x):
        return ca.batch_matmul(x, ca.transpose(const(first), PERMUTATION)), \
            ca.batch_matmul(x, ca.transpose(const(shared), PERMUTATION))

    def other(y):
        return ca.batch_matmul(y, ca.transpose(const(second), PERMUTATION))

    prog = program(main, {"x": ((2, 32), np.float32)},
                   {"a": ((2, 64), np.float32), "b": ((2, 40), np.float32)},
                   ("other", other, {"y": ((3, 32), np.float32)}, ((3, 48), np.float32)))
    return prog, first, second, shared


def test_every_graph_of_a_program_is_compressed_and_runs(tmp_path):
    from coreai_opt.runtime import run_asset

    prog, first, second, _ = _two_graph_program()
    with collect_reports() as reports:
        compressed = palettize_weights(prog, None, n_bits=8)
    assert {w.id.split("#")[0] for w in reports[0].compressed} == {"main", "other"}
    path = tmp_path / "two.aimodel"
    compressed.save_asset(path)
    x = np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((3, 32)).astype(np.float32)
    a = run_asset(path, {"x": x})["a"]
    out = run_asset(path, {"y": y}, function="other")["out"]
    assert np.isfinite(a).all() and np.isfinite(out).all()
    np.testing.assert_allclose(a, x @ first.T, rtol=0.05, atol=0.05 * np.abs(x @ first.T).max())
    np.testing.assert_allclose(out, y @ second.T, rtol=0.05, atol=0.05 * np.abs(y @ second.T).max())


@pytest.mark.parametrize("first,second", [
    (lambda p: palettize_weights(p, None), lambda p: palettize_weights(p, None, n_bits=2)),
    (lambda p: palettize_weights(p, None), lambda p: sparsify_weights(p)),
    (lambda p: sparsify_weights(p), lambda p: palettize_weights(p, None)),
    (lambda p: sparsify_weights(p, quantize_dtype="int8"), lambda p: sparsify_weights(p, palettize_nbits=4)),
])
def test_compressing_a_compressed_program_changes_nothing(first, second, small_net_fp32, tmp_path):
    once = first(small_net_fp32[0])
    before = fingerprint(once)
    with collect_reports() as reports:
        twice = second(once)
    assert not reports[0].compressed
    assert fingerprint(twice) == before
    outputs, _ = save_and_run(twice, small_net_fp32[2], tmp_path)
    assert all(np.isfinite(o).all() for o in outputs)
