"""Worker process of ``_pool.KernelPool``: answers pickled kernel calls read from stdin.

Run as a script by the pool (with ``-S``: no ``site`` module), never imported by
the library. Its first argument is the parent's ``sys.path``, installed before
anything else is imported (a script's own directory would otherwise come first
and shadow the standard library with this package's modules). The package
``__init__`` files are not run: the parent packages are registered as bare
namespaces, so a worker loads numpy and the kernels only, not the Core AI bindings.

An optional second argument lists pipes (``"request:reply"`` descriptor pairs,
comma-separated) of sibling workers to start once numpy and the kernels are
loaded: each is forked from this process, so the pool pays for one boot
(about 85 ms of CPU, nearly all of it importing numpy) instead of one per worker.
A process with more than one thread (say, BLAS threads the caller asked for)
never forks: it spawns each sibling afresh instead.

Frames on both pipes: ``_frames.send`` / ``_frames.receive`` (a length-prefixed
pickle with out-of-band buffers). Replies: ``("ok", result)``, ``("raised",
exception)`` when the call raised, ``("broken", message)`` when the request
itself could not be run. A ``None`` request asks for this process's peak
resident memory (KB) and ends it. A worker's first frame is ``("ready", pid)``.
"""

import sys

if __name__ == "__main__":
    sys.path[:] = sys.argv[1].split("\n") if len(sys.argv) > 1 else sys.path[1:]

import importlib
import os  # only after sys.path is the parent's
import signal
import types


def _register_bare_packages() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for name, path in (("coreai_opt", os.path.dirname(here)), ("coreai_opt.coreai_utils", here)):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [path]
            sys.modules[name] = package


def _peak_kb() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


#: Imported before reporting ready: a worker is started ahead of its first call, so it loads
#: numpy and the clustering kernels while the parent is still reading weights.
_PRELOAD = ("numpy", "coreai_opt.coreai_utils._kernels.kmeans1d", "coreai_opt.coreai_utils._kernels.kmeans_vec",
            "coreai_opt.coreai_utils._kernels.rounding")


def _preload() -> None:
    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a call that needs it reports the error itself
            pass


def _sibling_pipes(text: str) -> list[tuple[int, int]]:
    """The (request, reply) descriptor pairs of the second argument."""
    return [(int(request), int(reply)) for request, reply in (pair.split(":") for pair in text.split(",") if pair)]


def _single_threaded() -> bool:
    """Whether this process runs one thread, so forking it is safe (False where that cannot be told)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _spawn_sibling(request: int, reply: int) -> int | None:
    """Start a fresh worker on a pipe pair; its pid (None if it could not start)."""
    import subprocess

    try:
        # -S as ``_pool._INTERPRETER_FLAGS`` (not imported here: a worker imports no pool code)
        return subprocess.Popen([sys.executable, "-S", os.path.abspath(__file__), "\n".join(sys.path)],
                                stdin=request, stdout=reply, close_fds=True).pid
    except OSError:
        return None  # the pool reads the closed pipe as a worker that did not start


def _start_siblings(pipes: list[tuple[int, int]]) -> tuple[tuple[int, int] | None, list[int]]:
    """Start a worker on each pipe pair: (in a forked worker its own pair, else None; the pids of the
    workers this process started)."""
    sys.stderr.flush()  # nothing buffered is written twice
    started: list[int] = []
    for index, (request, reply) in enumerate(pipes):
        pid = -1
        if _single_threaded():
            try:
                pid = os.fork()
            except OSError:
                pid = -1
        if pid == 0:
            for fd in (fd for pair in pipes[index + 1 :] for fd in pair):
                os.close(fd)
            return (request, reply), []
        if pid < 0:
            pid = _spawn_sibling(request, reply)
        if pid is not None:
            started.append(pid)
        os.close(request)
        os.close(reply)
    return None, started


def _serve(requests, replies) -> None:
    from coreai_opt.coreai_utils._frames import receive, send

    send(replies, ("ready", os.getpid()))
    while True:
        try:
            request = receive(requests, replies)
        except EOFError:
            return  # the parent went away
        except BaseException as error:  # noqa: BLE001 - e.g. a module the call needs does not import here
            send(replies, ("broken", f"{type(error).__name__}: {error}"))
            continue
        if request is None:
            send(replies, ("peak_kb", _peak_kb()))
            return
        function, args = request
        try:
            result = function(*args)
        except BaseException as error:  # noqa: BLE001 - handed back to the caller
            try:
                send(replies, ("raised", error))
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                send(replies, ("raised", RuntimeError(f"{type(error).__name__}: {error}")))
            continue
        send(replies, ("ok", result))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes our stdin
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the reply stream
    sys.stdout = sys.stderr
    _register_bare_packages()
    _preload()
    requests = sys.stdin.buffer
    sibling, siblings = _start_siblings(_sibling_pipes(sys.argv[2] if len(sys.argv) > 2 else ""))
    if sibling is not None:  # a forked worker holds its own pipes only: the pool sees each worker's exit
        requests.close()
        replies.close()
        requests, replies = os.fdopen(sibling[0], "rb"), os.fdopen(sibling[1], "wb")
    try:
        _serve(requests, replies)
    except OSError:  # a reply could not be written: the parent went away or closed the pool unused
        pass
    try:
        replies.close()
        sys.stderr.flush()
    except OSError:  # the parent went away
        pass
    # Wait for the workers started here, so their CPU time counts in this process's children, and so in
    # the pool's caller's; they end when the pool closes them (it closes them first) or goes away.
    for pid in siblings:
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
    os._exit(0)  # nothing left to clean up: skipping interpreter shutdown lets the parent reap at once


if __name__ == "__main__":
    main()
