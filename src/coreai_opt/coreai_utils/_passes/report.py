"""What a compression pass did, weight by weight, and a way to collect it.

``palettize_weights`` and ``sparsify_weights`` keep the spec's signatures and
return only the program. To get the report as well, wrap the call::

    with collect_reports() as reports:
        program = palettize_weights(program, None, n_bits=4)
    print(reports[0].summary())
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Active collectors: (their list of reports, whether they want per-weight SNR).
_collectors: contextvars.ContextVar[tuple[tuple[list[CompressionReport], bool], ...]] = contextvars.ContextVar(
    "coreai_opt_report_collectors", default=()
)
#: (weights done, weights total, name of the weight just done) -> None
ProgressCallback = Callable[[int, int, str], None]
_progress: contextvars.ContextVar[ProgressCallback | None] = contextvars.ContextVar(
    "coreai_opt_progress", default=None
)


@dataclass
class WeightReport:
    """One weight: what it was, what became of it and at what cost."""

    name: str
    id: str
    shape: tuple[int, ...]
    element_type: str
    consumers: tuple[str, ...]
    status: str  # "compressed" or "skipped"
    detail: str  # what was done, or why it was skipped
    bytes_before: int
    bytes_after: int
    snr_db: float | None = None
    warning: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        row = dict(self.__dict__)
        row["shape"] = list(self.shape)
        row["consumers"] = list(self.consumers)
        if self.snr_db is not None and not math.isfinite(self.snr_db):
            row["snr_db"] = "inf" if self.snr_db > 0 else "-inf"
        return row


@dataclass
class CompressionReport:
    """The per-weight outcome of one pass over a program."""

    pass_name: str
    options: dict[str, Any]
    weights: list[WeightReport] = field(default_factory=list)
    seconds: float = 0.0
    worker_processes: int = 0  # child processes that ran the clustering (0: all in this process)
    worker_peak_bytes: int = 0  # their peak resident memory, summed

    @property
    def compressed(self) -> list[WeightReport]:
        return [w for w in self.weights if w.status == "compressed"]

    @property
    def skipped(self) -> list[WeightReport]:
        return [w for w in self.weights if w.status == "skipped"]

    @property
    def bytes_before(self) -> int:
        """Bytes of every weight the pass looked at, before."""
        return sum(w.bytes_before for w in self.weights)

    @property
    def bytes_after(self) -> int:
        """Bytes of the same weights after (skipped ones unchanged)."""
        return sum(w.bytes_after for w in self.weights)

    def summary(self) -> str:
        """One line: counts and sizes."""
        ratio = self.bytes_before / self.bytes_after if self.bytes_after else float("inf")
        return (
            f"{self.pass_name}: {len(self.compressed)} weights compressed, {len(self.skipped)} skipped; "
            f"{self.bytes_before:,} -> {self.bytes_after:,} bytes ({ratio:.2f}x) in {self.seconds:.2f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "pass": self.pass_name,
            "options": self.options,
            "seconds": self.seconds,
            "worker_processes": self.worker_processes,
            "worker_peak_bytes": self.worker_peak_bytes,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "weights": [w.to_dict() for w in self.weights],
        }


@contextlib.contextmanager
def collect_reports(snr: bool = True) -> Iterator[list[CompressionReport]]:
    """Collect the report of every pass run inside the ``with`` block (this thread/task).

    With ``snr`` (the default) each compressed weight's SNR is measured, which decodes
    every weight once more; ``snr=False`` leaves ``snr_db`` unset and costs nothing.
    """
    reports: list[CompressionReport] = []
    token = _collectors.set((*_collectors.get(), (reports, snr)))
    try:
        yield reports
    finally:
        _collectors.reset(token)


@contextlib.contextmanager
def observe_progress(callback: ProgressCallback) -> Iterator[None]:
    """Call ``callback(done, total, weight_name)`` on the calling thread as each weight is encoded."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def progress_callback() -> ProgressCallback | None:
    """The active progress callback, if any."""
    return _progress.get()


def snr_requested() -> bool:
    """Whether some caller collects reports with per-weight SNR."""
    return any(snr for _, snr in _collectors.get())


def publish(report: CompressionReport) -> None:
    """Hand ``report`` to every active collector."""
    for reports, _ in _collectors.get():
        reports.append(report)
