"""Kernel calls on worker processes: the clustering in parallel on every core.

numpy releases the GIL in its long loops but not in the many short calls and
counts of the clustering, so threads overlap poorly. ``KernelPool`` runs
picklable calls of ``_kernels`` functions in child processes instead, each fed
by a thread of this process.

- One of the workers is this process itself (the *local lane*): its thread runs
  calls here, with no process to boot and no pipe for the weights to cross
  (MiniLM, 2 workers: 5-15 % less time than two children). Only one thread
  computes here, so the GIL is not fought over. While the pool is open, BLAS in
  this process runs one thread (``threadpoolctl``), as in the children: otherwise
  the matrix products of vector clustering start BLAS threads next to the
  children (cluster_dim 2: 3.1 s against 1.6 s).
- Children run ``_pool_child.py`` through ``subprocess``, not ``multiprocessing``:
  forking this process (which has threads) can deadlock, and spawning re-runs the
  caller's ``__main__`` (a script without a main guard would start over in every
  worker). Workers started ahead (``start``) on Linux boot once: the first loads
  numpy and the kernels and forks the others, having one thread (else it spawns
  them), which saves each other worker's boot (about 85 ms of CPU, on the cores
  the caller is reading weights on; MiniLM 4-bit per-tensor 0.45 -> 0.40 s).
- They start only for a pass with enough weight values (``PROCESS_MIN_VALUES``;
  small programs stay in this process), and only when more than one worker may run
  (for calls that sort, see the next point).
- On CPUs whose AVX-512 sorts are slow (AMD Zen 4: ``avx512_sort_targets``), a
  pool of calls that mostly sort (``sorts``) runs every call in children whose
  numpy uses its AVX2 code instead, with no local lane and even for one worker.
- Closing a pool waits for each child's last reply (its peak memory), not for it
  to exit: a thread reaps it while the caller goes on (the kernel freeing a
  worker's memory took 8 ms per worker, on the caller's time). ``wait_for_exits``
  waits for them, e.g. to count their CPU time. Cancelling waits as before.
- A call gives the same bits in any process (same code, same numpy; the kernels
  use no operation whose result depends on numpy's SIMD target), so the output
  never depends on where it ran. A child that cannot start or dies is replaced
  by running its calls here; ``failures`` says what happened.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from ._frames import Stacked, can_push, frame, push, receive, send, write_frame, write_parts

#: Weight values a pass must have for children to start: below it, starting them (about 0.2 s of
#: CPU each) costs more than they save.
PROCESS_MIN_VALUES = 1 << 21
_CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pool_child.py")
#: A child skips the ``site`` module (``-S``): it installs this process's ``sys.path`` itself, so
#: the ``.pth`` files need not run again (5 ms of each boot, which the first call waits for).
_INTERPRETER_FLAGS = ("-S",)
_CLOSE_SECONDS = 10.0
#: Threads reaping the children of closed pools (``_Child.close`` without waiting).
_reapers: list[threading.Thread] = []
_reapers_lock = threading.Lock()


class WorkerLost(RuntimeError):
    """A worker process could not run a call (it did not start, died, or could not read the request)."""


class _NotPicklable(Exception):
    """The call cannot be sent to a process (it is run here instead; the result is the same)."""


#: Environment of a child (the caller's own settings win):
#: - one BLAS/OpenMP thread: each child is one worker already, and BLAS threads of several
#:   children spinning on the same cores made vector clustering (matrix products) 5x slower;
#: - glibc keeps every freed block for reuse, whole-tensor temporaries (hundreds of MB) included:
#:   otherwise it maps and unmaps each large temporary afresh, paying page faults every time (the
#:   MiniLM embedding's per-tensor clustering: 0.40 s with 0.1 s of faults on each call with a
#:   32 MB limit, 0.34 s and none from the second call on); the heap grows 64 MB at a time:
#:   grown by the default 128 kB, a first call spent 0.38 s in the kernel (the same embedding:
#:   0.64 s on the first call against 0.36 s). Other C libraries ignore these.
_CHILD_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
    "MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 32), "MALLOC_TOP_PAD_": str(1 << 26),
}
#: numpy's own switch of its SIMD targets (read when numpy is imported) and its opposite, which
#: it refuses alongside.
_NUMPY_DISABLE, _NUMPY_ENABLE = "NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES"
_ZEN4_FAMILY = 0x19


def _is_zen4(cpuinfo: str) -> bool:
    """Whether ``/proc/cpuinfo`` text describes an AMD family 19h CPU with AVX-512 (Zen 4; Zen 3,
    the same family, has no AVX-512). Zen 4 runs the memory form of the AVX-512 compress
    instruction, which numpy's AVX-512 sorts use on every vector, in microcode."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block describes them all
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    try:
        family = int(fields.get("cpu family", ""))
    except ValueError:
        return False
    return (fields.get("vendor_id") == "AuthenticAMD" and family == _ZEN4_FAMILY
            and "avx512f" in fields.get("flags", "").split())


def avx512_sort_targets() -> tuple[str, ...]:
    """numpy's AVX-512 SIMD targets in use here if its AVX-512 sorts are slow on this CPU, else ().

    On the AMD EPYC (Zen 4) this project is benchmarked on, ``np.sort`` of 4 M
    float32 values took 0.15 s with them and 0.026 s with numpy's AVX2 code
    (``np.partition`` 0.028 s and 0.005 s). A caller who set numpy's own switch
    keeps it (): their choice wins, checked at every pass (only the CPU is read once).
    """
    if _NUMPY_DISABLE in os.environ or _NUMPY_ENABLE in os.environ or not _zen4_here():
        return ()
    return enabled_avx512_targets()


@functools.cache
def _zen4_here() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return _is_zen4(cpuinfo.read())
    except OSError:
        return False


def enabled_avx512_targets() -> tuple[str, ...]:
    """numpy's AVX-512 SIMD targets that this CPU runs (names as ``NPY_DISABLE_CPU_FEATURES`` takes them)."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:
        return ()
    features = getattr(umath, "__cpu_features__", {})
    return tuple(name for name in getattr(umath, "__cpu_dispatch__", ())
                 if (name == "X86_V4" or name.startswith("AVX512")) and features.get(name))


_F_SETPIPE_SZ = 1031  # Linux fcntl: a pipe's capacity
_PIPE_BYTES = 1 << 20


def _widen(pipe) -> None:
    """Give a pipe 1 MiB of room where the OS allows it (Linux), so megabytes of weights cross in
    fewer, larger steps; elsewhere it keeps its default."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
    except (ImportError, OSError):
        pass


class _Child:
    """One worker process and the pipes to it; used by one thread at a time.

    ``process`` is None for a worker forked by another (``start_workers``): it is
    not this process's child, so it is known by the pid it reports when ready.
    """

    def __init__(self, requests, replies, process: subprocess.Popen | None = None) -> None:
        self.requests, self.replies, self.process = requests, replies, process
        self.pid = process.pid if process is not None else None
        self._pidfd: int | None = None
        self._ready = False
        self._pushes = can_push()  # large request buffers go straight into its memory (``_frames``)
        for pipe in (requests, replies):
            _widen(pipe)

    def call(self, function: Callable, args: tuple) -> Any:
        try:
            request = frame((function, args), push=self._pushes)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            raise _NotPicklable(str(error)) from error
        try:
            if not self._ready:
                self._know(int(self._expect("ready")))
                self._ready = True
            self._push(write_frame(self.requests, request))
            kind, value = receive(self.replies)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
            raise WorkerLost(self._why(error)) from error
        if kind == "raised":
            raise value
        if kind != "ok":
            raise WorkerLost(str(value))
        return value

    def _push(self, buffers: list) -> None:
        """Write the request's pushed buffers into the worker at the addresses it replies with; where
        the OS refuses (say, a policy against writing into other processes), send them through the
        pipe, now and in later calls."""
        if not buffers:
            return
        pushed = push(self.pid, buffers, self._expect("addresses"))
        send(self.requests, pushed)
        if not pushed:
            self._pushes = False
            write_parts(self.requests, buffers)

    def _know(self, pid: int) -> None:
        """Remember a forked worker's pid, through a pidfd where there is one (a signal then cannot reach
        another process that reused the pid)."""
        if self.process is not None:
            return
        self.pid = pid
        try:
            self._pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pass

    def _expect(self, kind: str) -> Any:
        got, value = receive(self.replies)
        if got != kind:
            raise WorkerLost(f"expected {kind!r}, got {got!r}: {value}")
        return value

    def _why(self, error: BaseException) -> str:
        code = None
        if self.process is not None:
            try:
                code = self.process.wait(1.0)  # a closed pipe usually means it is exiting
            except subprocess.TimeoutExpired:
                pass
        if code is None:
            return f"{type(error).__name__}: {error}"
        return f"it exited with signal {-code}" if code < 0 else f"it exited with status {code}"

    def stop(self) -> None:
        """Kill the process now, busy or not (a forked worker that never reported ready has no call to
        stop: closing its pipes ends it)."""
        if self.process is not None:
            self.process.kill()
        elif self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                pass
        elif self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def close(self, wait: bool = True) -> int:
        """End the process; its peak resident memory in KB (0 when it could not say). Without
        ``wait``, a thread waits for it to exit (``wait_for_exits``)."""
        peak = 0
        if not self._ready and self.process is not None and self.process.poll() is None:
            self.process.kill()  # started ahead but never used: no work to wait for
        try:
            if self._ready and (self.process is None or self.process.poll() is None):
                send(self.requests, None)
                peak = int(self._expect("peak_kb"))
        except (OSError, EOFError, WorkerLost, pickle.UnpicklingError, ValueError):
            pass
        for stream in (self.requests, self.replies):
            try:
                stream.close()
            except OSError:
                pass
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self.process is not None:
            if wait:
                _reap(self.process)
            else:
                _reap_later(self.process)
        return peak

    def kill(self) -> None:
        self.stop()
        self.close()


def _reap(process: subprocess.Popen) -> None:
    """Wait for an ended child to exit (a worker exits once it has replied to the close), killing
    it if it takes too long."""
    try:
        process.wait(_CLOSE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _reap_later(process: subprocess.Popen) -> None:
    thread = threading.Thread(target=_reap, args=(process,), name="coreai_opt_reaper", daemon=True)
    with _reapers_lock:
        _reapers[:] = [reaper for reaper in _reapers if reaper.is_alive()]
        _reapers.append(thread)
    thread.start()


def wait_for_exits() -> None:
    """Wait until the worker processes of closed pools have exited and been reaped (their CPU time
    is then in ``resource.getrusage(resource.RUSAGE_CHILDREN)``)."""
    with _reapers_lock:
        reapers = list(_reapers)
    for reaper in reapers:
        reaper.join()


def start_workers(environment: dict[str, str], count: int) -> list[_Child]:
    """``count`` worker processes: one spawned, which forks the others once it has loaded numpy and
    the kernels (where it can; see ``_pool_child``). Elsewhere than Linux use ``count=1``: forking
    there is unsafe once system frameworks have threads."""
    if not sys.executable:
        raise OSError("this Python does not know its own executable")
    pipes = [(os.pipe(), os.pipe()) for _ in range(count - 1)]  # (request, reply) of each sibling
    theirs = [fd for request, reply in pipes for fd in (request[0], reply[1])]
    ours = [fd for request, reply in pipes for fd in (request[1], reply[0])]
    try:
        process = subprocess.Popen(
            [sys.executable, *_INTERPRETER_FLAGS, _CHILD_SCRIPT, "\n".join(sys.path),
             ",".join(f"{request[0]}:{reply[1]}" for request, reply in pipes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, pass_fds=theirs,
            env={**environment, **os.environ},
        )
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    return [_Child(process.stdin, process.stdout, process),
            *(_Child(os.fdopen(request[1], "wb"), os.fdopen(reply[0], "rb")) for request, reply in pipes)]


class _OneBlasThread:
    """Holds BLAS in this process to one thread until ``release``. Pools open at the same time (passes
    on several threads) share one limit, and the last to release restores the caller's setting."""

    _lock = threading.Lock()
    _holders = 0
    _limit: Any = None

    def __init__(self) -> None:
        cls = type(self)
        with cls._lock:
            if cls._holders == 0:
                from threadpoolctl import threadpool_limits

                cls._limit = threadpool_limits(limits=1, user_api="blas")
            cls._holders += 1

    def release(self) -> None:
        cls = type(self)
        with cls._lock:
            cls._holders -= 1
            if cls._holders == 0:
                cls._limit.restore_original_limits()
                cls._limit = None


class KernelPool:
    """Runs kernel calls on ``workers`` lanes: child processes and, with ``local_lane``, this process.

    Children are used when ``workers`` > 1 and the pass has at least
    ``PROCESS_MIN_VALUES`` weight ``values`` (``workers - 1`` of them with the
    local lane); otherwise every call runs here. Calls that mostly sort
    (``sorts``) on a CPU with slow AVX-512 sorts run in ``workers`` children
    that skip AVX-512, whatever ``workers`` (``avx2_children``). ``map`` may be
    called from several threads at once. Use as a context manager: leaving it
    ends the children.
    """

    def __init__(self, workers: int, values: int, local_lane: bool = True, sorts: bool = False) -> None:
        self.workers = workers
        large = values >= PROCESS_MIN_VALUES
        skipped = avx512_sort_targets() if sorts and large else ()
        self.avx2_children = bool(skipped)
        self.use_processes = large and (workers > 1 or self.avx2_children)
        self.local_lane = local_lane and not self.avx2_children
        self._environment = {**_CHILD_ENVIRONMENT, **({_NUMPY_DISABLE: " ".join(skipped)} if skipped else {})}
        self._lane_free = self.local_lane  # no thread runs its calls here yet
        self._blas_limit: _OneBlasThread | None = None  # held while the pool is open (``__enter__``)
        self.failures: list[str] = []  # why a child could not be used (its calls ran here)
        self.peak_kb: list[int] = []  # each ended child's peak resident memory
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._children: list[_Child] = []
        self._started: list[_Child] = []  # started by ``start`` and not yet taken by a thread
        self._closing = False

    def __enter__(self) -> Self:
        """With the local lane among worker processes, BLAS in this process runs one thread until
        ``close``. Set here, on the caller's thread: OpenBLAS ignores a lower limit set from another
        thread once the main thread has set one."""
        if self.use_processes and self.local_lane:
            self._blas_limit = _OneBlasThread()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close(cancel=exc_info[0] is not None)

    @property
    def processes(self) -> int:
        """Child processes started so far."""
        return len(self._children) + len(self.peak_kb)

    def start(self) -> None:
        """Start the worker processes now (when they will be used), so they boot while the caller
        reads weights instead of when the first call arrives; on Linux one boots and forks the others."""
        with self._lock:
            if not self.use_processes or self._closing or self._children:
                return
        count = self.workers - 1 if self.local_lane else self.workers
        for batch in [count] if sys.platform == "linux" and count else [1] * count:
            try:
                children = start_workers(self._environment, batch)
            except (OSError, ValueError):
                return  # the threads try again and record why
            with self._lock:
                self._children.extend(children)
                self._started.extend(children)

    def map(self, function: Callable, chunks: Sequence) -> list:
        """``[function(chunk) for chunk in chunks]``, in the worker processes when they are used. A chunk
        may be a ``Stacked``: a worker gets it as one array; here ``function`` gets the ``Stacked``
        (``np.asarray`` joins it)."""
        executor = self._executor_for_children()
        if executor is None:
            return [function(chunk) for chunk in chunks]
        futures = [executor.submit(self._run, function, chunk) for chunk in chunks]
        return [future.result() for future in futures]

    def _executor_for_children(self) -> ThreadPoolExecutor | None:
        with self._lock:
            if not self.use_processes or self._closing:
                return None
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="coreai_opt_worker")
            return self._executor

    def _run(self, function: Callable, chunk: Any) -> Any:
        child = self._child()
        if child is not None:
            try:
                return child.call(function, (chunk,))
            except _NotPicklable:
                pass  # e.g. a function patched in by a test: same result here
            except WorkerLost as error:
                if self._closing:
                    raise
                self._local.child = None
                self._local.here = True
                with self._lock:
                    self.failures.append(f"a worker process stopped ({error}); its work continued in this process")
                child.kill()
        return function(chunk)

    def _child(self) -> _Child | None:
        """This thread's worker process: its own, else one started ahead, else a new one. None when
        the thread is the local lane or its child was lost: its calls run here."""
        if getattr(self._local, "here", False):  # the local lane, or its child was lost
            return None
        child = getattr(self._local, "child", None)
        if child is None:
            if self._take_lane():
                self._local.here = True
                return None
            child = self._local.child = self._take_started() or self._new_child()
        return child

    def _take_lane(self) -> bool:
        """Whether this thread becomes the local lane (the first thread to ask does)."""
        with self._lock:
            taken, self._lane_free = self._lane_free, False
            return taken

    def _take_started(self) -> _Child | None:
        with self._lock:
            return self._started.pop() if self._started else None

    def _new_child(self) -> _Child | None:
        """A new worker process for this thread; None (recorded, and this thread stops trying) if it cannot start."""
        try:
            [child] = start_workers(self._environment, 1)
        except (OSError, ValueError) as error:
            self._local.here = True
            with self._lock:
                self.failures.append(f"could not start a worker process ({error}); clustering ran in this process")
            return None
        with self._lock:
            self._children.append(child)
        return child

    def close(self, cancel: bool = False) -> None:
        """Wait for (or, with ``cancel``, drop) queued calls and end the children: they exit in the
        background (``wait_for_exits``), or, with ``cancel``, before this returns. A call already
        running in this process (the local lane) cannot be interrupted: cancelling waits for it."""
        with self._lock:
            self._closing = True
            executor, self._executor = self._executor, None
        if cancel:
            for child in self._children:
                child.stop()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=cancel)
        with self._lock:
            children, self._children = self._children, []
            blas_limit, self._blas_limit = self._blas_limit, None
        if blas_limit is not None:
            blas_limit.release()
        # Latest first: a worker that forked others (``start_workers``) waits for them before it exits.
        self.peak_kb.extend(child.close(wait=cancel) for child in reversed(children))
