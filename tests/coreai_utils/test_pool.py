"""KernelPool: kernel calls in worker processes give this process's bits, and failures lose nothing."""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from functools import partial

import numpy as np
import pytest

from coreai_opt.coreai_utils import CompressionWarning, collect_reports, palettize_weights
from coreai_opt.coreai_utils._kernels.kmeans1d import palettize_rows
from coreai_opt.coreai_utils._kernels.kmeans_vec import palettize_vectors
from coreai_opt.coreai_utils._kernels.rounding import round_through
from coreai_opt.coreai_utils import _pool
from coreai_opt.coreai_utils._pool import PROCESS_MIN_VALUES, KernelPool, wait_for_exits
from helpers import pool_calls
from helpers.program import weight_expressions
from coreai_opt.coreai_utils._encoding import constants

ALWAYS = 1 << 40  # a pass size that always uses children


def _children_only(workers: int = 2) -> KernelPool:
    """A pool whose every call runs in a child (no local lane), for tests of the children themselves."""
    return KernelPool(workers, ALWAYS, local_lane=False)


def _chunks():
    rng = np.random.default_rng(7)
    return [rng.standard_normal((3, 5000)).astype(np.float16), rng.laplace(size=(2, 70000)).astype(np.float16),
            rng.standard_normal((4, 900)).astype(np.float32)]


def _same(a, b) -> bool:
    return all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(a, b))


@pytest.mark.parametrize("started", [False, True])  # spawned at the first call, or started (and forked) ahead
def test_children_give_the_bits_of_this_process(started):
    scalar = partial(palettize_rows, k=16, round_decimals=4, to_storage=partial(round_through, dtype=np.float16))
    vector = partial(palettize_vectors, k=8, to_storage=partial(round_through, dtype=np.float32))
    points = [np.random.default_rng(1).standard_normal((2, 600, 2)).astype(np.float32)]
    here = [scalar(c) for c in _chunks()] + [vector(p) for p in points]
    with _children_only() as pool:
        if started:
            pool.start()
        there = pool.map(scalar, _chunks()) + pool.map(vector, points)
        assert pool.processes >= 1
    assert not pool.failures
    assert len(pool.peak_kb) == pool.processes and all(kb > 0 for kb in pool.peak_kb)
    for (lut_a, idx_a), (lut_b, idx_b) in zip(here, there, strict=True):
        assert _same((lut_a, idx_a), (lut_b, idx_b))


@pytest.mark.parametrize("refused", [False, True])
def test_large_requests_are_written_into_the_children_or_else_piped(refused, monkeypatch):
    """Large request buffers are written straight into a child's memory (``_frames.push``); where the
    OS refuses, they go through the pipe from then on. The bits are the same either way."""
    from coreai_opt.coreai_utils import _frames

    monkeypatch.setattr(_frames, "PUSH_BYTES", 1024)
    pushes = []
    real_push = _pool.push

    def recorded_push(pid, buffers, addresses):
        pushes.append(len(buffers))
        return False if refused else real_push(pid, buffers, addresses)

    monkeypatch.setattr(_pool, "push", recorded_push)
    scalar = partial(palettize_rows, k=16, round_decimals=4, to_storage=partial(round_through, dtype=np.float16))
    here = [scalar(c) for c in _chunks()]
    with _children_only() as pool:
        there = pool.map(scalar, _chunks())
    assert not pool.failures
    for a, b in zip(here, there, strict=True):
        assert _same(a, b)
    if refused:
        assert 1 <= len(pushes) <= 2  # each child is tried once, then piped to
    elif _frames.can_push():
        assert pushes == [1, 1, 1]


def test_a_child_gets_a_stacked_chunk_as_one_array(monkeypatch):
    """A ``Stacked`` chunk reaches a child as the concatenation of its parts, pushed or piped alike."""
    from coreai_opt.coreai_utils import _frames

    monkeypatch.setattr(_frames, "PUSH_BYTES", 1024)
    parts = [np.arange(6000.0).reshape(3, 2000), np.ones((1, 2000)), np.arange(10.0).reshape(5, 2)[:, 0].repeat(400)[None]]
    with _children_only() as pool:
        [there] = pool.map(pool_calls.doubled, [_frames.Stacked(parts)])
    assert not pool.failures and pool.processes >= 1
    np.testing.assert_array_equal(there, np.concatenate(parts) * 2)


def test_children_without_avx512_give_the_bits_of_this_process(monkeypatch):
    """Where sorting runs in children that skip numpy's AVX-512 code, the kernels must not depend on
    numpy's SIMD target: every path of the scalar search, long rows and 16-bit rows included."""
    from coreai_opt.coreai_utils import _pool

    targets = _pool.enabled_avx512_targets()
    if not targets:
        pytest.skip("numpy runs no AVX-512 code on this CPU")
    monkeypatch.delenv("NPY_DISABLE_CPU_FEATURES", raising=False)
    monkeypatch.setattr(_pool, "avx512_sort_targets", lambda: targets)
    rng = np.random.default_rng(11)
    calls = [  # (k, rows): DP starts with moves, companded and even starts (k = 64), 8 bits, whole tensors
        (16, rng.standard_normal((6, 3000)).astype(np.float32)),
        (64, rng.laplace(size=(4, 1500)).astype(np.float32)),
        (256, rng.standard_t(3, size=(1, 300_000)).astype(np.float32)),
        (16, rng.standard_normal((1, 1 << 18)).astype(np.float32)),
        (32, rng.standard_normal((5, 900)).astype(np.float16)),
        (16, rng.standard_normal((2, 70_000)).astype(np.float16)),
    ]
    kernels = [partial(palettize_rows, k=k, round_decimals=4) for k, _ in calls]
    here = [kernel(rows) for kernel, (_, rows) in zip(kernels, calls, strict=True)]
    with KernelPool(2, ALWAYS, sorts=True) as pool:
        there = [pool.map(kernel, [rows])[0] for kernel, (_, rows) in zip(kernels, calls, strict=True)]
        assert pool.avx2_children and pool.processes >= 1
    assert not pool.failures
    for ours, theirs in zip(here, there, strict=True):
        assert _same(ours, theirs)


def test_a_child_loads_numpy_and_the_kernels_only():
    with _children_only() as pool:
        [(pid, modules)] = pool.map(pool_calls.where_and_what, [None])
    assert pid != os.getpid()
    assert "numpy" in modules
    assert not [m for m in modules if m == "coreai" or m.startswith(("coreai.", "coreai_opt.coreai_utils._ir"))]
    # Nor the pool's own machinery: a worker boots while the parent reads weights, on the same cores.
    assert not {"coreai_opt.coreai_utils._pool", "subprocess", "concurrent.futures"} & set(modules)


def test_the_local_lane_is_one_of_the_workers():
    with KernelPool(3, ALWAYS) as pool:
        pool.start()
        assert pool.processes == 2  # the third worker is this process
        # Six calls long enough that each of the three lanes' threads takes one before any finishes.
        pids = pool.map(partial(pool_calls.pid_after, 0.3), [None] * 6)
        started = {child.pid for child in pool._children}  # noqa: SLF001 - known once they served a call
    assert set(pids) == started | {os.getpid()}
    assert not pool.failures and len(pool.peak_kb) == 2


def test_blas_runs_one_thread_here_while_a_pool_with_the_local_lane_is_open():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return {lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"}

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with KernelPool(2, ALWAYS) as pool:
            pool.start()
            # Four calls long enough that both lanes take some, one of them in this process.
            pids = pool.map(partial(pool_calls.pid_after, 0.3), [None] * 4)
            during = blas_threads()
        after = blas_threads()
        # Pools open at once (passes on several threads) share the limit; the last one restores it.
        first, second = KernelPool(2, ALWAYS), KernelPool(2, ALWAYS)
        with first:
            second.__enter__()
        overlapping = blas_threads()
        second.close()
        assert overlapping == {1} and blas_threads() == {2}
        # No lane here among children, or no children: BLAS keeps its threads.
        for other in (KernelPool(2, ALWAYS, local_lane=False), KernelPool(2, PROCESS_MIN_VALUES - 1)):
            with other:
                untouched = blas_threads()
            assert untouched == {2}
    assert os.getpid() in pids and len(set(pids)) == 2
    assert before == after == {2} and during == {1}


def test_small_passes_and_one_worker_stay_in_this_process():
    for pool in (KernelPool(2, PROCESS_MIN_VALUES - 1), KernelPool(1, ALWAYS)):
        with pool:
            [(pid, _)] = pool.map(pool_calls.where_and_what, [None])
        assert pid == os.getpid() and pool.processes == 0


def test_what_a_child_prints_does_not_break_the_replies():
    chunks = [np.arange(5.0), np.arange(3.0)]
    with _children_only() as pool:
        results = pool.map(pool_calls.loud_doubled, chunks)
    assert not pool.failures
    assert [r.tolist() for r in results] == [[0, 2, 4, 6, 8], [0, 2, 4]]


def test_an_exception_in_a_child_is_raised_here_and_the_child_stays_usable():
    with _children_only() as pool:
        with pytest.raises(ValueError, match="negative values refused"):
            pool.map(pool_calls.refuse_negative, [np.array([1.0, -1.0])])
        [again] = pool.map(pool_calls.refuse_negative, [np.array([2.0])])
    assert again.tolist() == [4.0] and not pool.failures


def test_a_child_that_dies_is_replaced_by_this_process():
    chunks = [np.full(4, float(i)) for i in range(6)]
    with _children_only() as pool:
        results = pool.map(partial(pool_calls.die_unless_in, os.getpid()), chunks)
    assert [r.tolist() for r in results] == [[2.0 * i] * 4 for i in range(6)]
    assert pool.failures and all("exited with status 3" in f for f in pool.failures)


@pytest.mark.parametrize("started", [False, True])
def test_a_child_that_cannot_start_is_replaced_by_this_process(monkeypatch, started):
    from coreai_opt.coreai_utils import _pool

    monkeypatch.setattr(_pool, "_CHILD_SCRIPT", os.devnull)  # python runs it and exits at once
    with _children_only() as pool:
        if started:
            pool.start()  # on Linux the second would have been forked by the first: its pipe just closes
        results = pool.map(pool_calls.doubled, [np.ones(2), np.ones(3)])
    assert [r.tolist() for r in results] == [[2.0, 2.0], [2.0, 2.0, 2.0]]
    assert pool.failures and all("exited with status 0" in f or "closed the pipe" in f for f in pool.failures)


def test_cancelling_ends_busy_children_without_waiting_for_them():
    pool = _children_only()
    errors = []

    def ask():
        try:
            pool.map(partial(pool_calls.sleep_then_double, 60.0), [np.ones(1)])
        except Exception as error:  # noqa: BLE001 - recorded for the assertion
            errors.append(error)

    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.monotonic() + 30
    while not pool._children and time.monotonic() < deadline:  # noqa: SLF001 - wait for the child to start
        time.sleep(0.05)
    start = time.monotonic()
    pool.close(cancel=True)
    asker.join(30)
    assert time.monotonic() - start < 20 and not asker.is_alive()
    assert errors and all(c.process.returncode is not None for c in pool._children)  # noqa: SLF001


def test_palettize_output_is_the_same_with_worker_processes(small_net_fp16, monkeypatch):
    from coreai_opt.coreai_utils import _pool
    from coreai_opt.coreai_utils._passes import runner

    monkeypatch.setattr(runner, "available_cpus", lambda: 2)
    program = small_net_fp16[0]
    digests, processes = [], []
    for workers, threshold in ((1, PROCESS_MIN_VALUES), (2, 0)):
        monkeypatch.setattr(_pool, "PROCESS_MIN_VALUES", threshold)
        with collect_reports() as reports:
            compressed = palettize_weights(program, None, granularity="per_grouped_channel", group_size=4,
                                           num_kmeans_workers=workers)
        processes.append(reports[0].worker_processes)
        expressions = weight_expressions(compressed)
        digests.append([c.array.tobytes() for kind in sorted(expressions) for c in constants(expressions[kind][0])])
    assert processes[0] == 0 and processes[1] >= 1
    assert digests[0] == digests[1]


def test_a_lost_worker_is_reported_as_a_warning_and_the_result_is_unchanged(small_net_fp32, monkeypatch):
    from coreai_opt.coreai_utils import _pool
    from coreai_opt.coreai_utils._passes import runner

    monkeypatch.setattr(runner, "available_cpus", lambda: 2)
    program = small_net_fp32[0]
    expected = weight_expressions(palettize_weights(program, None, num_kmeans_workers=1))
    monkeypatch.setattr(_pool, "PROCESS_MIN_VALUES", 0)
    monkeypatch.setattr(_pool, "_CHILD_SCRIPT", os.devnull)
    # Every call goes to a child, which is lost.
    monkeypatch.setattr(runner, "KernelPool", partial(_pool.KernelPool, local_lane=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = weight_expressions(palettize_weights(program, None, num_kmeans_workers=2))
    messages = [str(w.message) for w in caught if issubclass(w.category, CompressionWarning)]
    assert any("worker process" in m and "continued in this process" in m for m in messages), messages
    assert sorted(got) == sorted(expected)
    for kind in expected:
        assert _same([c.array for c in constants(expected[kind][0])], [c.array for c in constants(got[kind][0])])


def test_a_call_that_does_not_pickle_runs_here():
    with KernelPool(2, ALWAYS) as pool:
        [(pid, doubled)] = pool.map(lambda chunk: (os.getpid(), chunk * 2), [np.ones(2)])
    assert pid == os.getpid() and doubled.tolist() == [2.0, 2.0] and not pool.failures


@pytest.mark.parametrize("chosen, defaults", [
    ({"OPENBLAS_NUM_THREADS": "3"}, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
    ({"MALLOC_TOP_PAD_": "4096"}, {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}),
    ({}, {"MALLOC_TOP_PAD_": str(1 << 26)}),
])
def test_children_run_one_blas_thread_and_keep_their_memory_unless_the_caller_chose(monkeypatch, chosen, defaults):
    for name in defaults:
        monkeypatch.delenv(name, raising=False)
    for name, value in chosen.items():
        monkeypatch.setenv(name, value)
    with _children_only() as pool:
        [settings] = pool.map(partial(pool_calls.environment, [*chosen, *defaults]), [None])
    assert settings == {**defaults, **chosen}


def test_started_children_boot_before_the_first_call_and_serve_it():
    with _children_only() as pool:
        pool.start()
        assert pool.processes == 2  # started now, not at the first call
        pids = {pid for pid, _ in pool.map(pool_calls.where_and_what, [None] * 4)}
        assert pids <= {child.pid for child in pool._children} and pool.processes == 2
        pool.start()  # once only
        assert pool.processes == 2
    assert not pool.failures and len(pool.peak_kb) == 2


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="started workers are forked on Linux only")


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (exited, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


@linux_only
@pytest.mark.parametrize("blas_threads", ["1", "2"])
def test_started_workers_are_forked_from_the_first_unless_it_has_threads(monkeypatch, blas_threads):
    """The first worker boots and forks the others, which saves their boots; a first worker with
    more than one thread (here BLAS threads the caller asked for) spawns them afresh instead."""
    if blas_threads != "1" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("OpenBLAS starts no threads on one CPU")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", blas_threads)
    with _children_only(3) as pool:
        pool.start()
        first = pool._children[0]  # noqa: SLF001
        # Three calls long enough that each worker takes one before any finishes.
        seen = {pid: rest for pid, *rest in pool.map(partial(pool_calls.lineage, 0.3), [None] * 3)}
        pids = {child.pid for child in pool._children}  # noqa: SLF001
    assert not pool.failures and set(seen) == pids and len(pids) == 3
    _, first_argv, first_threads = seen.pop(first.process.pid)
    assert (first_threads == 1) == (blas_threads == "1")
    for parent, argv, _ in seen.values():
        assert parent == first.process.pid
        assert (argv == first_argv) == (first_threads == 1)  # a forked worker runs the first one's command line
    wait_for_exits()
    assert first.process.returncode == 0 and all(_gone(pid) for pid in pids)


@linux_only
def test_forked_workers_cpu_time_counts_as_this_processs_childrens():
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with _children_only(3) as pool:
        pool.start()
        used = pool.map(partial(pool_calls.spin, 0.2), [None] * 3)
    wait_for_exits()  # closing does not wait for them
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert pool.processes == 3 and not pool.failures
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) >= sum(used)


def test_closing_returns_before_the_children_have_exited(monkeypatch):
    """The caller does not wait for the children to exit (the kernel freeing their memory); they are
    reaped in the background, and ``wait_for_exits`` waits for that."""
    release = threading.Event()
    reap = _pool._reap  # noqa: SLF001

    def held_reap(process):
        release.wait(30)
        reap(process)

    monkeypatch.setattr(_pool, "_reap", held_reap)
    with _children_only(2) as pool:
        pool.start()
        pool.map(partial(pool_calls.pid_after, 0.3), [None] * 2)  # long enough that each child takes one
        spawned = [child.process for child in pool._children if child.process is not None]  # noqa: SLF001
    assert spawned and all(process.returncode is None for process in spawned)  # not reaped yet
    assert len(pool.peak_kb) == 2 and all(kb > 0 for kb in pool.peak_kb)  # but every child answered
    release.set()
    wait_for_exits()
    assert all(process.returncode == 0 for process in spawned)


@linux_only
def test_cancelling_ends_busy_forked_workers():
    pool = _children_only(2)
    pool.start()
    errors = []

    def ask():
        try:
            pool.map(partial(pool_calls.sleep_then_double, 60.0), [np.ones(1), np.ones(1)])
        except Exception as error:  # noqa: BLE001 - recorded for the assertion
            errors.append(error)

    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.monotonic() + 30
    while not all(child.pid for child in pool._children) and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.05)  # until the forked worker has reported ready: its pid is known
    pids = [child.pid for child in pool._children]  # noqa: SLF001
    start = time.monotonic()
    pool.close(cancel=True)
    asker.join(30)
    assert time.monotonic() - start < 20 and not asker.is_alive() and errors
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids)


@linux_only
def test_a_forked_worker_that_dies_is_replaced_by_this_process():
    chunks = [np.full(4, float(i)) for i in range(6)]
    with _children_only() as pool:
        pool.start()
        results = pool.map(partial(pool_calls.die_unless_in, os.getpid()), chunks)
    assert [r.tolist() for r in results] == [[2.0 * i] * 4 for i in range(6)]
    assert len(pool.failures) == 2 and any("exited with status 3" in f for f in pool.failures)


def test_starting_a_pool_that_stays_in_this_process_starts_nothing():
    for pool in (KernelPool(2, PROCESS_MIN_VALUES - 1), KernelPool(1, ALWAYS)):
        with pool:
            pool.start()
            [(pid, _)] = pool.map(pool_calls.where_and_what, [None])
        assert pid == os.getpid() and pool.processes == 0


def test_a_started_child_preloads_the_kernels_it_will_run():
    with _children_only() as pool:
        pool.start()
        [(_, modules)] = pool.map(pool_calls.where_and_what, [None])
    assert {"coreai_opt.coreai_utils._kernels.kmeans1d", "coreai_opt.coreai_utils._kernels.kmeans_vec"} <= set(modules)


@pytest.mark.parametrize("slow_sorts, expected", [
    (False, [0, 1, 1, 1, 1]),  # scalar and vector clustering: one child and this process
    (True, [0, 2, 2, 1, 1]),  # sorting on a CPU with slow AVX-512 sorts: two children; vectors do not sort
])
def test_only_passes_that_cluster_start_worker_processes(small_net_fp32, small_net_fp16, monkeypatch, slow_sorts,
                                                          expected):
    from coreai_opt.coreai_utils import _pool, sparsify_weights
    from coreai_opt.coreai_utils._passes import runner

    _with_slow_avx512_sorts(monkeypatch, slow_sorts)
    monkeypatch.setattr(runner, "available_cpus", lambda: 2)
    monkeypatch.setattr(_pool, "PROCESS_MIN_VALUES", 0)
    program = small_net_fp32[0]
    with collect_reports() as reports:
        sparsify_weights(program)
        sparsify_weights(program, palettize_nbits=2)
        palettize_weights(program, None, num_kmeans_workers=2)
        palettize_weights(program, None, num_kmeans_workers=2, cluster_dim=2)
        palettize_weights(small_net_fp16[0], None, num_kmeans_workers=2)  # 16-bit values are mostly counted
    assert [report.worker_processes for report in reports] == expected


def _with_slow_avx512_sorts(monkeypatch, slow: bool) -> tuple[str, ...]:
    """Make the pool treat this CPU's AVX-512 sorts as slow, or not; the targets its children skip."""
    from numpy._core import _multiarray_umath as umath

    from coreai_opt.coreai_utils import _pool

    targets = tuple(umath.__cpu_dispatch__[-1:]) if slow else ()  # a target this numpy knows
    monkeypatch.setattr(_pool, "avx512_sort_targets", lambda: targets)
    return targets


def test_sorting_calls_run_in_children_without_avx512_where_its_sorts_are_slow(monkeypatch):
    monkeypatch.delenv("NPY_DISABLE_CPU_FEATURES", raising=False)
    probe = partial(pool_calls.environment, ["NPY_DISABLE_CPU_FEATURES"])
    targets = _with_slow_avx512_sorts(monkeypatch, True)
    for workers in (1, 2):  # even one worker: all sorting calls run with the same numpy code
        with KernelPool(workers, ALWAYS, sorts=True) as pool:
            pool.start()
            assert pool.processes == workers and pool.avx2_children
            settings = pool.map(probe, [None] * 4)
        assert settings == [{"NPY_DISABLE_CPU_FEATURES": " ".join(targets)}] * 4 and not pool.failures
    # Calls that do not sort, small passes, and CPUs whose AVX-512 sorts are fast: as before.
    with KernelPool(2, ALWAYS) as pool:
        pool.start()
        assert pool.processes == 1 and not pool.avx2_children
        assert pool.map(probe, [None]) == [{"NPY_DISABLE_CPU_FEATURES": None}]
    for pool in (KernelPool(2, PROCESS_MIN_VALUES - 1, sorts=True), KernelPool(1, ALWAYS)):
        with pool:
            [(pid, _)] = pool.map(pool_calls.where_and_what, [None])
        assert pid == os.getpid() and pool.processes == 0
    _with_slow_avx512_sorts(monkeypatch, False)
    assert not KernelPool(1, ALWAYS, sorts=True).use_processes


_ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nflags\t\t: fpu avx2 avx512f\n\n"


@pytest.mark.parametrize("cpuinfo, zen4", [
    (_ZEN4, True),
    (_ZEN4 + "processor\t: 1\nvendor_id\t: GenuineIntel\n", True),  # the first processor speaks for all
    (_ZEN4.replace(" avx512f", ""), False),  # Zen 3: the same family, no AVX-512
    (_ZEN4.replace("25", "26"), False),  # Zen 5 stores compressed vectors at full speed
    (_ZEN4.replace("AuthenticAMD", "GenuineIntel").replace("25", "6"), False),
    ("", False),
    ("vendor_id: AuthenticAMD\ncpu family: twenty-five\nflags: avx512f\n", False),
])
def test_zen4_is_recognised_from_cpuinfo(cpuinfo, zen4):
    from coreai_opt.coreai_utils._pool import _is_zen4

    assert _is_zen4(cpuinfo) is zen4


@pytest.mark.parametrize("callers_setting", [None, "NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES"])
def test_zen4_children_skip_every_avx512_target_unless_the_caller_set_numpys_switch(monkeypatch, callers_setting):
    from coreai_opt.coreai_utils import _pool

    monkeypatch.setattr(_pool, "_is_zen4", lambda cpuinfo: True)
    for name in ("NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES"):
        monkeypatch.delenv(name, raising=False)
    _pool._zen4_here.cache_clear()
    try:
        assert _pool.avx512_sort_targets() == _pool.enabled_avx512_targets()
        if callers_setting:  # set after a first pass: still wins
            monkeypatch.setenv(callers_setting, "AVX512_SPR")
            assert _pool.avx512_sort_targets() == ()
    finally:
        _pool._zen4_here.cache_clear()


@pytest.mark.parametrize("idle_seconds", [0.0, 1.0])  # closed while booting, and once ready
def test_started_children_that_get_no_call_end_at_once_and_quietly(idle_seconds, capfd):
    with _children_only() as pool:
        pool.start()
        time.sleep(idle_seconds)
        start = time.perf_counter()
    assert time.perf_counter() - start < 2.0
    assert pool.processes == 2 and not pool.failures
    assert "Traceback" not in capfd.readouterr().err
