"""The driver every compression pass shares.

1. Select: walk the program's constants; a float constant whose consumers are all
   weight ops and that has more than ``threshold`` elements is a candidate.
2. Encode: read each candidate and let the pass's encoder turn it into a
   decompression expression (numpy only, on worker threads, one weight per task,
   so the result does not depend on the number of workers).
3. Apply: build every replacement, then swap them in; a failure before the swap
   erases what was built, so the program is never left half-changed.
4. Report: one row per weight, warnings for the ones that could not be compressed.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial

import numpy as np

from .. import _ir
from .._dtypes import FLOAT_TYPES, non_finite_count, storage_bytes
from .._encoding import Node, decode
from .._encoding import storage_bytes as encoded_bytes
from .._pool import KernelPool
from .report import CompressionReport, WeightReport, progress_callback, publish, snr_requested


class CompressionWarning(UserWarning):
    """A weight could not be compressed as asked (it is named in the message)."""


@dataclass(frozen=True)
class Encoded:
    """An encoder's result: the replacement expression and a description of it."""

    node: Node
    detail: str
    notes: tuple[str, ...] = ()  # things the user should know (each becomes a warning)


@dataclass(frozen=True)
class Skipped:
    """An encoder's refusal, with the reason shown to the user."""

    reason: str


#: (weight, role, element type, pool for kernel calls) -> outcome. Must not touch the IR (it runs
#: on worker threads).
Encoder = Callable[[np.ndarray, "_ir.Role", str, KernelPool], "Encoded | Skipped"]


@dataclass
class _Candidate:
    position: int  # order in the program, for the report
    site: _ir.ConstantSite
    analysis: _ir.RoleAnalysis


def check_program(program: object) -> None:
    """Raise TypeError unless ``program`` is an ``AIProgram``, with a hint for common mix-ups."""
    if isinstance(program, _ir.AIProgram):
        return
    kind = type(program).__name__
    hint = ""
    if isinstance(program, str) or hasattr(program, "__fspath__"):
        hint = " To compress a saved model, load it first: AIModelAsset.load(path).program."
    elif kind == "AIModelAsset":
        hint = " Use its program: asset.program (AIModelAsset.load(path).program)."
    elif any(base.__name__ == "Module" and "torch" in base.__module__ for base in type(program).__mro__):
        hint = " Convert the torch module to Core AI first (coreai_torch.TorchConverter), then pass the program."
    raise TypeError(f"coreai_program must be a coreai.authoring.AIProgram, got {kind}.{hint}")


def _weight_report(site: _ir.ConstantSite, analysis: _ir.RoleAnalysis, status: str, detail: str,
                   bytes_after: int | None = None, snr_db: float | None = None, warning: bool = False) -> WeightReport:
    before = storage_bytes(site.size, site.element_type)
    return WeightReport(
        name=site.name, id=site.id, shape=site.shape, element_type=site.element_type,
        consumers=analysis.consumers, status=status, detail=detail,
        bytes_before=before, bytes_after=before if bytes_after is None else bytes_after,
        snr_db=snr_db, warning=warning,
    )


def _select(module, threshold: int) -> tuple[list[_Candidate], list[tuple[int, WeightReport]]]:
    candidates: list[_Candidate] = []
    passed_over: list[tuple[int, WeightReport]] = []
    for position, site in enumerate(_ir.iter_constants(module)):
        if site.element_type not in FLOAT_TYPES:
            continue
        analysis = _ir.analyse_role(site)
        if len(analysis.non_weight_consumers) == len(analysis.consumers):
            continue  # no weight op reads it: not a weight
        if analysis.role is None:
            others = ", ".join(sorted(set(analysis.non_weight_consumers)))
            passed_over.append((position, _weight_report(
                site, analysis, "skipped", f"also read by {others}, which is not a weight op", warning=True)))
        elif site.size <= threshold:
            passed_over.append((position, _weight_report(
                site, analysis, "skipped", f"{site.size} elements <= weight_num_threshold {threshold}")))
        else:
            candidates.append(_Candidate(position, site, analysis))
    return candidates, passed_over


def snr_db(original: np.ndarray, decoded: np.ndarray) -> float:
    """Signal-to-noise ratio of ``decoded`` against ``original`` in dB (inf when exact)."""
    x = original.astype(np.float64)
    noise = float(np.sum(np.square(x - decoded.astype(np.float64))))
    signal = float(np.sum(np.square(x)))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _encode_one(load: Callable[[], np.ndarray], role, element_type: str, encoder: Callable, want_snr: bool):
    weight = load()
    bad = non_finite_count(weight)
    if bad:
        return Skipped(f"contains {bad} NaN/Inf values; left uncompressed"), None
    outcome = encoder(weight, role, element_type)
    snr = snr_db(weight, decode(outcome.node)) if want_snr and isinstance(outcome, Encoded) else None
    return outcome, snr


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def usable_threads(requested: int) -> int:
    """``requested`` worker threads, but at most one per available CPU: more only contend for
    the cores and hold more weights in memory at once. The output never depends on it."""
    return max(1, min(requested, available_cpus()))


def _outcomes(jobs: list, sizes: list[int], encoder: Callable, workers: int, want_snr: bool) -> Iterator:
    """(job index, outcome) of each job as it finishes; on ``workers`` threads when there is more
    than one, largest weights first (the longest tasks start first, so none is left running alone
    at the end). Where a job runs never changes its outcome."""
    def run(job):
        return _encode_one(*job, encoder, want_snr)

    if workers <= 1 or len(jobs) <= 1:
        yield from enumerate(map(run, jobs))
        return
    largest_first = sorted(range(len(jobs)), key=lambda index: -sizes[index])
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coreai_opt") as pool:
        futures = {pool.submit(run, jobs[index]): index for index in largest_first}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # do not start the rest after a failure
            raise


def _encode_all(candidates: list[_Candidate], blobs, encoder: Callable, workers: int, want_snr: bool) -> list:
    """Each candidate's (outcome, SNR), in candidate order; progress is reported as weights finish."""
    loaders = [_ir.constant_loader(c.site.op, blobs) for c in candidates]
    jobs = [(load, c.analysis.role, c.site.element_type) for load, c in zip(loaders, candidates, strict=True)]
    sizes = [c.site.size for c in candidates]
    progress = progress_callback()
    results: list = [None] * len(jobs)
    for done, (index, outcome) in enumerate(_outcomes(jobs, sizes, encoder, workers, want_snr), start=1):
        results[index] = outcome
        if progress is not None:
            progress(done, len(jobs), candidates[index].site.name)
    return results


def _apply(module, candidates: list[_Candidate], outcomes: Iterable) -> None:
    editor = _ir.ProgramEditor(module)
    try:
        for candidate, (outcome, _) in zip(candidates, outcomes, strict=True):
            if isinstance(outcome, Encoded):
                editor.insert(candidate.site.op, outcome.node)
    except BaseException:
        editor.rollback()
        raise
    editor.commit()


def _warn(rows: list[WeightReport], notes: list[str], pass_name: str) -> None:
    for row in rows:
        if row.warning:
            warnings.warn(f"{pass_name}: skipped weight '{row.name}' ({row.id}): {row.detail}",
                          CompressionWarning, stacklevel=5)
    for note in notes:
        warnings.warn(f"{pass_name}: {note}", CompressionWarning, stacklevel=5)


def run_pass(program, *, in_place: bool, pass_name: str, options: dict, threshold: int,
             encoder: Encoder, workers: int = 1):
    """Compress ``program``'s weights with ``encoder``; return the compressed program."""
    check_program(program)
    if not isinstance(in_place, bool):
        raise ValueError(f'"in_place" must be True or False. Got {in_place!r}.')
    start = time.perf_counter()
    target = program if in_place else _ir.clone_program(program)
    module = _ir.mlir_module(target)
    candidates, rows = _select(module, threshold)
    weight_bytes = sum(storage_bytes(c.site.size, c.site.element_type) for c in candidates)
    workers = usable_threads(workers)
    blobs = _ir.BlobReader(module.operation, weight_bytes)
    try:
        with KernelPool(workers, sum(c.site.size for c in candidates)) as pool:
            outcomes = _encode_all(candidates, blobs, partial(encoder, pool=pool), workers, snr_requested())
    finally:
        blobs.close()
    _apply(module, candidates, outcomes)

    notes = list(pool.failures)
    for candidate, (outcome, snr) in zip(candidates, outcomes, strict=True):
        site, analysis = candidate.site, candidate.analysis
        if analysis.conflict:
            notes.append(f"weight '{site.name}' ({site.id}): {analysis.conflict}")
        if isinstance(outcome, Skipped):
            rows.append((candidate.position,
                         _weight_report(site, analysis, "skipped", outcome.reason, warning=True)))
            continue
        notes.extend(f"weight '{site.name}' ({site.id}): {note}" for note in outcome.notes)
        rows.append((candidate.position, _weight_report(
            site, analysis, "compressed", outcome.detail, bytes_after=encoded_bytes(outcome.node), snr_db=snr)))
    ordered = [row for _, row in sorted(rows, key=lambda item: item[0])]
    report = CompressionReport(pass_name, options, ordered, time.perf_counter() - start,
                               worker_processes=pool.processes, worker_peak_bytes=1024 * sum(pool.peak_kb))
    _warn(ordered, notes, pass_name)
    publish(report)
    return target
