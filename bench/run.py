"""Benchmark palettize_weights / sparsify_weights on MiniLM-L6 and a synthetic ~1 B-weight program.

    /work/venv/bin/python bench/run.py [--rows ROW[,ROW...]] [--models minilm,synthetic]
        [--reference-python /work/venv_ref/bin/python] [--synthetic-blocks 16] [--repeat 1]
        [--out bench/RESULTS.md]

Every row runs in a fresh child process (``bench/_row.py``), once with our library and,
with ``--reference-python``, once with the existing implementation; fidelity is measured
here, in our environment. See bench/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import metrics  # noqa: E402
import models  # noqa: E402
import report  # noqa: E402
from _row import ROWS, split_row  # noqa: E402

RESULTS = models.OUT / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="rows to run on MiniLM (default: all)")
    parser.add_argument("--synthetic-rows", default="pal4-g32", help="rows to run on the synthetic model")
    parser.add_argument("--models", default="minilm,synthetic")
    parser.add_argument("--reference-python", help="interpreter with the existing implementation")
    parser.add_argument("--reference-results", type=pathlib.Path,
                        help="take the reference's rows from this earlier run's JSON instead of running them")
    parser.add_argument("--synthetic-blocks", type=int, default=16)
    parser.add_argument("--scaling-blocks", type=int, default=2,
                        help="smaller synthetic model for the size-scaling row (0: skip)")
    parser.add_argument("--workers", default="1,2",
                        help="num_kmeans_workers values for the worker-scaling rows on the synthetic model ('': skip)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row: best time, highest peak")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per row of ours")
    parser.add_argument("--reference-timeout", type=float, default=600, help="seconds per reference MiniLM row")
    parser.add_argument("--synthetic-timeout", type=float, default=1800,
                        help="seconds per synthetic-model row (ours and reference)")
    parser.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                        help="import our library from the live source tree instead of a copy taken at start")
    parser.add_argument("--out", type=pathlib.Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args(argv)
    for row in filter(None, args.rows.split(",") + args.synthetic_rows.split(",")):
        split_row(row)
    return args


def snapshot_sources() -> str:
    """Copy our package to bench/out/src-snapshot, compiled to bytecode as ``pip install`` leaves
    it, and put it first on the import path of this process and of every process of ours it
    starts: the whole run measures one version of the library even while it is being edited.
    Without the bytecode, a shell with PYTHONDONTWRITEBYTECODE set (this machine's) made every
    worker process compile the kernels from source during the call (about 20 ms of CPU each;
    the reference and numpy are installed compiled). Returns a description for the header."""
    source = BENCH.parent / "src" / "coreai_opt"
    target = models.OUT / "src-snapshot"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target / "coreai_opt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if not compileall.compile_dir(target, quiet=1):
        raise RuntimeError(f"could not compile the snapshot of our package in {target}")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    return metrics.source_state(BENCH.parent, target / "coreai_opt")


def run_row(python: str, row: str, source: pathlib.Path, target: pathlib.Path, timeout: float) -> dict:
    """Run one row in a fresh process; its JSON result, or an error/timeout record."""
    command = [python, str(BENCH / "_row.py"), row, str(source), str(target)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if python != sys.executable:
        env.pop("PYTHONPATH", None)  # the reference imports its own coreai_opt, never our snapshot
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        cpu = group_cpu_seconds(process.pid)
        os.killpg(process.pid, signal.SIGKILL)  # the row's own process group (k-means workers too)
        process.communicate()
        state = "hang" if cpu < 0.2 * timeout else "still computing"
        return {"ok": False, "timeout": True, "cpu_seconds": cpu,
                "error": f"{state} (timeout after {timeout:.0f} s, {cpu:.0f} CPU s used)"}
    for line in reversed(stdout.splitlines()):
        if line.startswith("BENCH-ROW "):
            result = json.loads(line.removeprefix("BENCH-ROW "))
            if not result["ok"]:
                result["traceback"] = stderr[-4000:]
            return result
    tail = " | ".join((stderr or stdout).strip().splitlines()[-3:])
    return {"ok": False, "error": f"exit code {process.returncode} after {time.perf_counter() - start:.0f} s: {tail}",
            "traceback": stderr[-4000:]}


def group_cpu_seconds(group: int) -> float:
    """CPU seconds used so far by the processes of process group ``group`` (and their reaped children)."""
    total = 0
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def run_best(python: str, row: str, source: pathlib.Path, target: pathlib.Path, timeout: float,
             repeat: int) -> dict:
    """``repeat`` fresh runs of a row: the fastest time and the highest peak memory."""
    runs = []
    for _ in range(repeat):
        runs.append(run_row(python, row, source, target, timeout))
        if not runs[-1]["ok"]:
            return runs[-1]
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["peak_kb"] = max(r["peak_kb"] for r in runs)
    best["runs"] = [r["seconds"] for r in runs]
    return best


def measure(args, model_name: str, source: pathlib.Path, row: str, fidelity, with_reference: bool,
            keep: bool) -> dict:
    """Run ``row`` with ours (and the reference) on ``source``; fidelity of each output."""
    record = {"model": model_name, "row": row}
    synthetic = model_name.startswith("synthetic")
    impls = [("ours", sys.executable, args.synthetic_timeout if synthetic else args.timeout)]
    if with_reference and args.reference_results:
        earlier = args.earlier_reference.get((model_name, row))
        if earlier is not None:
            record["ref"] = {**earlier, "reused": True}
    elif with_reference and args.reference_python:
        impls.append(("ref", args.reference_python, args.synthetic_timeout if synthetic else args.reference_timeout))
    for impl, python, timeout in impls:
        target = RESULTS / model_name / f"{row.replace('@', '_')}.{impl}.aimodel"
        shutil.rmtree(target, ignore_errors=True)
        log(f"{model_name} {row} [{impl}] ...")
        result = run_best(python, row, source, target, timeout, args.repeat)
        if result["ok"]:
            result["fidelity"] = vars(fidelity(target))
            result["bytecode"] = metrics.bytecode_digest(target)
        record[impl] = result
        log(f"    {report.summary(result)}")
        if not keep:
            shutil.rmtree(target, ignore_errors=True)
    return record


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_names = [m for m in args.models.split(",") if m]
    records, baselines, info = [], {}, metrics.machine()
    info["ours (source)"] = snapshot_sources() if args.snapshot else "live source tree (--no-snapshot)"
    if args.reference_results:
        earlier = json.loads(args.reference_results.read_text())
        args.earlier_reference = {(r["model"], r["row"]): r["ref"] for r in earlier["records"] if "ref" in r}
        info["reference"] = f"{earlier['machine'].get('reference', '?')}; rows reused from {args.reference_results}"
    elif args.reference_python:
        info["reference"] = reference_description(args.reference_python)
    if "minilm" in model_names:
        log("preparing MiniLM (converted once, cached under bench/out/minilm) ...")
        model = models.minilm()
        baselines["minilm"] = vars(metrics.minilm_fidelity(model, model.asset))
        for row in filter(None, args.rows.split(",")):
            records.append(measure(args, "minilm", model.asset, row,
                                   lambda path: metrics.minilm_fidelity(model, path), True, True))
    if "synthetic" in model_names:
        sizes = [args.synthetic_blocks]
        if args.scaling_blocks and args.scaling_blocks != args.synthetic_blocks:
            sizes.append(args.scaling_blocks)
        for blocks in sizes:
            spec = models.Synthetic(blocks)
            log(f"preparing {spec.name} ({spec.weight_count / 1e6:.0f} M weights, cached as {spec.asset}) ...")
            start = time.perf_counter()
            models.build_synthetic(spec)
            log(f"    ready in {time.perf_counter() - start:.0f} s")
            # Both sizes run pal4-g32 at the default worker count and at each --workers value.
            rows = [r for r in args.synthetic_rows.split(",") if r] if blocks == args.synthetic_blocks \
                else ["pal4-g32"]
            rows += [f"pal4-g32@w{w}" for w in args.workers.split(",") if w]
            for row in rows:
                records.append(measure(args, spec.name, spec.asset, row,
                                       lambda path, spec=spec: metrics.synthetic_fidelity(spec, path),
                                       "@" not in row, False))
    info["load average (1/5/15 min) at end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    (models.OUT / f"{args.out.stem}.json").write_text(json.dumps(
        {"machine": info, "baselines": baselines, "records": records}, indent=1, default=str))
    text = report.render(info, baselines, records, args)
    print(text)
    args.out.write_text(text)
    log(f"wrote {args.out}")
    return 0


def reference_description(python: str) -> str:
    code = ("from importlib import metadata as m; import platform; "
            "print(platform.python_version(), m.version('coreai-opt'), m.version('coreai-core'))")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        py, opt, core = done.stdout.split()
        return f"coreai-opt {opt} (Python {py}, coreai-core {core}) at {python}"
    except Exception as error:  # noqa: BLE001
        return f"{python} ({type(error).__name__}: {error})"


if __name__ == "__main__":
    sys.exit(main())
