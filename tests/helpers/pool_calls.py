"""Functions the worker-pool tests send to child processes (numpy and the standard library only,
so they import in a worker, which loads no more than that)."""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def doubled(values: np.ndarray) -> np.ndarray:
    return values * 2


def where_and_what(_chunk) -> tuple[int, list[str]]:
    """(pid, names of the loaded modules) of the process running the call."""
    return os.getpid(), sorted(sys.modules)


def pid_after(seconds: float, _chunk) -> int:
    """The pid of the process running the call, after ``seconds`` of sleep."""
    time.sleep(seconds)
    return os.getpid()


def loud_doubled(values: np.ndarray) -> np.ndarray:
    print("chatter on stdout must not reach the reply pipe")
    sys.stdout.flush()
    return values * 2


def refuse_negative(values: np.ndarray) -> np.ndarray:
    if (values < 0).any():
        raise ValueError("negative values refused")
    return values * 2


def die_unless_in(parent_pid: int, values: np.ndarray) -> np.ndarray:
    """Kill the worker process it runs in; run in the parent (``parent_pid``), just double."""
    if os.getpid() != parent_pid:
        os._exit(3)
    return values * 2


def sleep_then_double(seconds: float, values: np.ndarray) -> np.ndarray:
    time.sleep(seconds)
    return values * 2


def environment(names: list[str], _chunk) -> dict[str, str | None]:
    """The values of the environment variables ``names`` in the process running the call."""
    return {name: os.environ.get(name) for name in names}


def lineage(seconds: float, _chunk) -> tuple[int, int, list[str], int]:
    """(pid, parent pid, the worker script's arguments after ``sys.path``, threads) of the process running
    the call, after ``seconds`` of sleep."""
    time.sleep(seconds)
    return os.getpid(), os.getppid(), sys.argv[2:], len(os.listdir("/proc/self/task"))


def spin(seconds: float, _chunk) -> float:
    """Keep a CPU busy for ``seconds`` of this process's CPU time; return the time used."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return time.process_time() - start
