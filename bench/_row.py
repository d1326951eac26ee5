"""Run ONE benchmark row in this (fresh) process and print one JSON line.

    python bench/_row.py ROW INPUT.aimodel OUTPUT.aimodel

Uses only the public API (``coreai_opt.coreai_utils``), ``coreai``, numpy and the
standard library, so the same script runs under the reference implementation's
interpreter. ``ROW@wN`` overrides ``num_kmeans_workers`` with N.
"""

from __future__ import annotations

import json
import pathlib
import resource
import sys
import time
import traceback
import warnings

# row name -> (function, keyword arguments); enum values by name, resolved at run time.
ROWS: dict[str, tuple[str, dict]] = {
    "pal4-tensor": ("palettize", {}),
    "pal4-tensor-exact": ("palettize", {"enable_fast_kmeans_mode": False}),
    "pal4-channel": ("palettize", {"granularity": "PER_CHANNEL"}),
    "pal4-g32": ("palettize", {"granularity": "PER_GROUPED_CHANNEL", "group_size": 32}),
    "pal2-tensor": ("palettize", {"n_bits": 2}),
    "pal8-tensor": ("palettize", {"n_bits": 8}),
    "pal4-cd2": ("palettize", {"cluster_dim": 2}),
    "pal4-g16-int8lut": ("palettize", {"granularity": "PER_GROUPED_CHANNEL", "group_size": 16,
                                       "lut_dtype": "INT8"}),
    "pal6-pcs": ("palettize", {"n_bits": 6, "enable_per_channel_scale": True}),
    "sp50": ("sparsify", {}),
    "sp-2of4": ("sparsify", {"n_m_ratio": (2, 4), "target_sparsity": None}),
    "sp50-int8": ("sparsify", {"quantize_dtype": "INT8"}),
    "sp50-pal4": ("sparsify", {"palettize_nbits": 4}),
    "sp50-block4": ("sparsify", {"block_size": 4}),
}


def split_row(row: str) -> tuple[str, int | None]:
    """``"pal4-g32@w2"`` -> ``("pal4-g32", 2)``; a plain row name -> ``(row, None)``."""
    base, _, workers = row.partition("@w")
    if base not in ROWS or (workers and (not workers.isdigit() or ROWS[base][0] != "palettize")):
        raise ValueError(f"unknown row {row!r}; known: {', '.join(ROWS)} (palettize rows take @wN)")
    return base, int(workers) if workers else None


def call_of(row: str):
    """(function, keyword arguments) of the API call for ``row``, with enums resolved."""
    from coreai_opt.coreai_utils import CompressionGranularity, DType, palettize_weights, sparsify_weights

    base, workers = split_row(row)
    kind, kwargs = ROWS[base]
    kwargs = dict(kwargs)
    for key, enum in (("granularity", CompressionGranularity), ("lut_dtype", DType), ("quantize_dtype", DType)):
        if key in kwargs:
            kwargs[key] = enum[kwargs[key]]
    if kind == "palettize":
        kwargs.setdefault("lut_dtype", None)
        if workers is not None:
            kwargs["num_kmeans_workers"] = workers
        return palettize_weights, kwargs
    return sparsify_weights, kwargs


def asset_bytes(path: pathlib.Path) -> int:
    """Total size of the files of an asset directory."""
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


def peak_kb() -> int:
    """Peak resident memory of this process (KB): ``VmHWM``, the high-water mark of this
    process's own address space. ``ru_maxrss`` is kept in the JSON too, but on Linux it
    inherits the launching process's peak across fork/exec, so it over-reports here."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_for_worker_exits() -> None:
    """Ours lets its worker processes exit in the background after the call: wait for them, so
    that their CPU time is counted (an implementation without ``wait_for_exits`` is left as is)."""
    try:
        from coreai_opt.coreai_utils._pool import wait_for_exits
    except ImportError:
        return
    wait_for_exits()


def _report_collector():
    """``collect_reports`` of ours (without per-weight SNR, which would decode every weight
    again inside the timed call); a do-nothing stand-in for an implementation without it."""
    try:
        from coreai_opt.coreai_utils import collect_reports
    except ImportError:
        import contextlib

        return lambda snr: contextlib.nullcontext([])
    return collect_reports


def main(argv: list[str]) -> dict:
    row, source, target = argv[0], pathlib.Path(argv[1]), pathlib.Path(argv[2])
    result: dict = {"row": row, "bytes_before": asset_bytes(source)}
    try:
        function, kwargs = call_of(row)
        import coreai_opt
        from coreai.authoring import AIModelAsset

        collect_reports = _report_collector()

        result["version"] = getattr(coreai_opt, "__version__", "?")
        start = time.perf_counter()
        program = AIModelAsset.load(str(source)).program
        result["load_seconds"] = time.perf_counter() - start
        result["peak_kb_loaded"] = peak_kb()
        with warnings.catch_warnings(record=True) as caught, collect_reports(snr=False) as reports:
            warnings.simplefilter("always")
            start, cpu, children_cpu = time.perf_counter(), time.process_time(), _children_cpu()
            compressed = function(program, **kwargs, in_place=False)
            result["seconds"] = time.perf_counter() - start
            _wait_for_worker_exits()
            # all threads of this process, and the worker processes it started
            result["cpu_seconds"] = time.process_time() - cpu + _children_cpu() - children_cpu
        if reports and hasattr(reports[0], "worker_processes"):  # ours (the reference has no reports)
            result["worker_processes"] = reports[0].worker_processes
            result["worker_peak_kb"] = reports[0].worker_peak_bytes // 1024
        messages = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)})
        result["warnings"] = len(messages)
        result["warning_examples"] = messages[:3]
        # The row's memory: this process's peak plus each worker process's (a sum of peaks: an upper bound).
        result["peak_kb_process"] = peak_kb()
        result["peak_kb"] = result["peak_kb_process"] + result.get("worker_peak_kb", 0)
        del program
        start = time.perf_counter()
        target.parent.mkdir(parents=True, exist_ok=True)
        compressed.save_asset(target)
        result["save_seconds"] = time.perf_counter() - start
        result["bytes_after"] = asset_bytes(target)
        result["ok"] = True
    except BaseException as error:  # noqa: BLE001 - the harness records any failure
        traceback.print_exc()
        result["ok"] = False
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f"{pathlib.Path(frame.filename).name}:{frame.lineno} in {frame.name}"
        result["error"] = f"{type(error).__name__}: {error}".strip() + f" (at {where})"
    result["peak_kb_total"] = peak_kb()
    result["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["module"] = sys.modules["coreai_opt"].__file__ if "coreai_opt" in sys.modules else None
    result["children_peak_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return result


if __name__ == "__main__":
    print("BENCH-ROW " + json.dumps(main(sys.argv[1:])), flush=True)
