"""The driver every compression pass shares.

1. Select: walk the program's constants; a float constant whose consumers are all
   weight ops and that has more than ``threshold`` elements is a candidate.
2. Encode: read each candidate and let the pass's encoder turn it into a
   decompression expression (numpy only, on worker threads; a task is one weight
   or a batch of weights the encoder clusters together, fixed by the program,
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
#: on worker threads). An encoder may also offer ``batch_key(shape, role, element_type)`` and
#: ``encode_batch(weights, roles, element_type, pool)``: weights with equal keys are then encoded
#: together (see ``_tasks``). One that never calls ``pool.map`` should say so with ``uses_pool = False``,
#: so no worker processes are started for it ahead of use; one whose kernel calls mostly sort the
#: values of some weights offers ``sorts(element_type) -> bool`` (see ``KernelPool``).
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


def _encode_task(loads: list[Callable[[], np.ndarray]], roles: list, element_type: str, encoder: Encoder,
                 pool: KernelPool, want_snr: bool) -> list[tuple]:
    """(outcome, SNR) of each weight of a task: one weight, or a batch the encoder encodes together."""
    weights = [load() for load in loads]
    results: list = [None] * len(weights)
    ready = []
    for index, weight in enumerate(weights):
        bad = non_finite_count(weight)
        if bad:
            results[index] = Skipped(f"contains {bad} NaN/Inf values; left uncompressed")
        else:
            ready.append(index)
    if len(ready) == 1:
        results[ready[0]] = encoder(weights[ready[0]], roles[ready[0]], element_type, pool)
    elif ready:
        outcomes = encoder.encode_batch([weights[i] for i in ready], [roles[i] for i in ready], element_type, pool)
        for index, outcome in zip(ready, outcomes, strict=True):
            results[index] = outcome
    return [(outcome, snr_db(weight, decode(outcome.node)) if want_snr and isinstance(outcome, Encoded) else None)
            for weight, outcome in zip(weights, results, strict=True)]


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


#: Values at most in one batch of weights encoded together. It bounds the memory a batch holds,
#: and the last batches must be small enough for the workers to finish together: MiniLM 4-bit
#: per-tensor (an 11.7 M-value embedding, 7.1 M and 3.5 M values of two other shapes) took 7-10 %
#: less time in batches of 4 M than of 8 M values on 2 workers (8-bit 7 %, 6-bit 12 %), the same
#: time at 2 M.
_BATCH_VALUES = 1 << 22


def _tasks(candidates: list[_Candidate], encoder) -> list[list[int]]:
    """Candidate indices encoded together: weights the encoder's ``batch_key`` groups (up to
    ``_BATCH_VALUES`` values a batch), every other weight alone. Depends on the program only."""
    batch_key = getattr(encoder, "batch_key", None)
    tasks: list[list[int]] = []
    open_batches: dict = {}  # key -> (its open batch, values in it)
    for index, candidate in enumerate(candidates):
        site = candidate.site
        key = batch_key(site.shape, candidate.analysis.role, site.element_type) if batch_key is not None else None
        batch, values = open_batches.get(key, (None, 0)) if key is not None else (None, 0)
        if batch is None or values + site.size > _BATCH_VALUES:
            batch, values = [], 0
            tasks.append(batch)
        batch.append(index)
        if key is not None:
            open_batches[key] = (batch, values + site.size)
    return tasks


def _threaded(tasks: list[list[int]], workers: int) -> bool:
    """Whether ``_outcomes`` runs the tasks on threads of their own."""
    return workers > 1 and len(tasks) > 1


def _outcomes(tasks: list[list[int]], sizes: list[int], run: Callable[[list[int]], list], workers: int,
              meanwhile: Callable[[], None]) -> Iterator:
    """(candidate index, ``run(task)`` item) of each weight as its task finishes; on ``workers`` threads when
    there is more than one task, largest tasks first (the longest start first, so none is left running
    alone at the end). ``meanwhile`` runs on this thread: once the tasks are started, or first when
    they run here. Where a task runs never changes its outcomes."""
    if not _threaded(tasks, workers):
        meanwhile()
        for task in tasks:
            yield from zip(task, run(task))
        return
    largest_first = sorted(range(len(tasks)), key=lambda index: -sizes[index])
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coreai_opt") as pool:
        futures = {pool.submit(run, tasks[index]): tasks[index] for index in largest_first}
        try:
            meanwhile()
            for future in as_completed(futures):
                yield from zip(futures[future], future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # do not start the rest after a failure
            raise


def _encode_all(module, candidates: list[_Candidate], blobs, encoder: Encoder, pool: KernelPool, workers: int,
                want_snr: bool, stream: bool = True) -> list:
    """Each candidate's (outcome, SNR), in candidate order; progress is reported as weights finish.

    With threads, the weights are read as the module is serialised (``BlobReader.stream``): a
    weight's encoding starts once its blob is written, not once the whole module is. Should a
    blob not be where the writer was expected to put it, everything is encoded again from the
    serialised module (never seen so far; the outcomes would not depend on it).
    """
    tasks = _tasks(candidates, encoder)
    streamed = stream and _threaded(tasks, workers)
    if streamed:
        blobs.stream(_ir.resource_blobs(module))
    loads = [_ir.constant_loader(c.site.op, blobs) for c in candidates]  # reads the IR: here, not on threads

    def run(task: list[int]) -> list:
        return _encode_task([loads[i] for i in task], [candidates[i].analysis.role for i in task],
                            candidates[task[0]].site.element_type, encoder, pool, want_snr)

    sizes = [sum(candidates[i].site.size for i in task) for task in tasks]
    progress = progress_callback()
    results: list = [None] * len(candidates)
    for done, (index, outcome) in enumerate(_outcomes(tasks, sizes, run, workers, blobs.load), start=1):
        results[index] = outcome
        if progress is not None:
            progress(done, len(candidates), candidates[index].site.name)
    if streamed and blobs.mispredicted:
        return _encode_all(module, candidates, blobs, encoder, pool, workers, want_snr, stream=False)
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


def _sort_bound(encoder: Encoder, candidates: list[_Candidate], values: int) -> bool:
    """Whether the encoder's kernel calls sort most of the pass's ``values``."""
    sorts = getattr(encoder, "sorts", None)
    return sorts is not None and 2 * sum(c.site.size for c in candidates if sorts(c.site.element_type)) > values


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
    values = sum(c.site.size for c in candidates)
    blobs = _ir.BlobReader(module.operation, weight_bytes)
    try:
        with KernelPool(workers, values, sorts=_sort_bound(encoder, candidates, values)) as pool:
            if getattr(encoder, "uses_pool", True):
                pool.start()  # the workers boot while the weights are read
            outcomes = _encode_all(module, candidates, blobs, encoder, pool, workers, snr_requested())
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
