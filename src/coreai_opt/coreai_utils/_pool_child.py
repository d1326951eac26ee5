"""Worker process of ``_pool.KernelPool``: answers pickled kernel calls read from stdin.

Run as a script by the pool, never imported by the library. Its first argument is
the parent's ``sys.path``, installed before anything else is imported (a script's
own directory would otherwise come first and shadow the standard library with
this package's modules). The package ``__init__`` files are not run: the parent
packages are registered as bare namespaces, so a worker loads numpy and the
kernels only, not the Core AI bindings.

Frames on both pipes: ``_frames.send`` / ``_frames.receive`` (a length-prefixed
pickle with out-of-band buffers). Replies: ``("ok", result)``, ``("raised",
exception)`` when the call raised, ``("broken", message)`` when the request
itself could not be run. A ``None`` request asks for this process's peak
resident memory (KB) and ends it.
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


def _serve(requests, replies) -> None:
    from coreai_opt.coreai_utils._frames import receive, send

    _preload()
    send(replies, ("ready", None))
    while True:
        try:
            request = receive(requests)
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
    try:
        _serve(sys.stdin.buffer, replies)
    except OSError:  # a reply could not be written: the parent went away or closed the pool unused
        pass
    try:
        replies.close()
        sys.stderr.flush()
    except OSError:  # the parent went away
        pass
    os._exit(0)  # nothing left to clean up: skipping interpreter shutdown lets the parent reap at once


if __name__ == "__main__":
    main()
