"""Render benchmark records as Markdown (RESULTS.md and stdout)."""

from __future__ import annotations

import shlex
import sys

COLUMNS = ["model", "row", "ours s", "ref s", "speed-up", "ours peak MB", "ref peak MB", "bytes before",
           "ours bytes after", "ref bytes after", "ours cosine mean/min (SNR dB)",
           "ref cosine mean/min (SNR dB)", "non-finite ours/ref"]


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _mb(kb: float) -> str:
    return f"{kb / 1024:,.0f}"


def _bytes(count: int | None) -> str:
    return "" if count is None else f"{count / 1e6:,.2f} MB"


def _cell(text: str, limit: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary(result: dict) -> str:
    """One log line for a run."""
    if not result["ok"]:
        return f"FAILED: {result['error']}"
    fid = result.get("fidelity", {})
    return (f"{result['seconds']:.2f} s, peak {result['peak_kb'] / 1024:.0f} MB, "
            f"{result['bytes_before']} -> {result['bytes_after']} bytes, {fidelity_text(fid)}")


def fidelity_text(fid: dict | None) -> str:
    if not fid:
        return ""
    if fid.get("error"):
        return _cell("fidelity error: " + fid["error"])
    if fid.get("snr_db") is not None:
        return f"{fid['snr_db']:.2f} dB (worst weight {fid['min_snr_db']:.2f})"
    return f"{fid['cos_mean']:.5f} / {fid['cos_min']:.5f}"


def _time(result: dict | None) -> str:
    if result is None:
        return "–"
    if not result["ok"]:
        return _cell(result["error"])
    return _seconds(result["seconds"])


def _field(result: dict | None, key: str, fmt) -> str:
    if result is None or not result["ok"] or result.get(key) is None:
        return "–"
    return fmt(result[key])


def _non_finite(result: dict | None) -> str:
    if result is None or not result["ok"]:
        return "–"
    value = result.get("fidelity", {}).get("non_finite")
    return "–" if value is None else str(value)


def row_cells(record: dict) -> list[str]:
    ours, ref = record.get("ours"), record.get("ref")
    speed = "–"
    if ours and ref and ours["ok"] and ref["ok"] and ours["seconds"] > 0:
        speed = f"{ref['seconds'] / ours['seconds']:.1f}×"
    before = next((r["bytes_before"] for r in (ours, ref) if r and r.get("bytes_before")), None)
    return [record["model"], record["row"], _time(ours), _time(ref), speed,
            _field(ours, "peak_kb", _mb), _field(ref, "peak_kb", _mb), _bytes(before),
            _field(ours, "bytes_after", _bytes), _field(ref, "bytes_after", _bytes),
            fidelity_text(ours.get("fidelity")) if ours and ours["ok"] else "–",
            fidelity_text(ref.get("fidelity")) if ref and ref["ok"] else "–",
            f"{_non_finite(ours)} / {_non_finite(ref)}"]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def scaling_section(records: list[dict], weights: dict[str, int]) -> list[str]:
    """Each pal4-g32 variant (worker count) measured on more than one synthetic size, smallest first."""
    lines, rows = [], []
    for variant in sorted({r["row"] for r in records if r["row"].startswith("pal4-g32")}):
        runs = sorted((r for r in records if r["row"] == variant and r["model"] in weights),
                      key=lambda r: weights[r["model"]])
        if len(runs) < 2:
            continue
        small = runs[0]["ours"] if runs[0]["ours"]["ok"] else None
        for record in runs:
            ours, count = record["ours"], weights[record["model"]]
            cells = [variant, record["model"], f"{count / 1e6:,.0f} M"]
            if not ours["ok"]:
                rows.append(cells + [_time(ours)] + [""] * 5)
                continue
            growth = "" if small is None or record is runs[0] else (
                f"{count / weights[runs[0]['model']]:.1f}× / {ours['seconds'] / small['seconds']:.1f}× / "
                f"{ours['peak_kb'] / small['peak_kb']:.2f}×")
            rows.append(cells + [_seconds(ours["seconds"]), f"{ours['seconds'] / (count / 1e6) * 1e3:.0f}",
                                 _mb(ours["peak_kb_loaded"]), _mb(ours["peak_kb"]), growth])
    if not rows:
        return []
    lines += ["## Scaling with model size (pal4-g32, ours)", "",
              "*peak after load*: the row process right after `AIModelAsset.load` (imports; the program is "
              "mapped lazily). Growth is relative to the smaller model of the same variant.", ""]
    lines += table(["row", "model", "weights", "seconds", "ms per M weights", "peak after load MB", "peak MB",
                    "growth: weights / time / peak"], rows)
    return lines + [""]


def workers_section(records: list[dict], model: str) -> list[str]:
    runs = [r for r in records if r["model"] == model and r["row"].startswith("pal4-g32@w")]
    if not runs:
        return []
    default = next((r for r in records if r["model"] == model and r["row"] == "pal4-g32"), None)
    runs = runs + ([default] if default else [])
    lines = [f"## k-means worker scaling ({model}, pal4-g32, ours)", "",
             "`pal4-g32` without a suffix uses the default `num_kmeans_workers=4` (on "
             "this 2-core machine). Identical: same `main.mlirb` bytes / same decoded weights as the first "
             "successful run.", ""]
    rows, first = [], next((r["ours"] for r in runs if r["ours"]["ok"]), None)
    for record in runs:
        ours = record["ours"]
        if not ours["ok"]:
            rows.append([record["row"], _time(ours), "", "", "", ""])
            continue
        same_bytes = "yes" if ours["bytecode"] == first["bytecode"] else "NO"
        same_weights = "yes" if ours["fidelity"].get("digest") == first["fidelity"].get("digest") else "NO"
        rows.append([record["row"], _seconds(ours["seconds"]), _seconds(ours["cpu_seconds"]),
                     f"{first['seconds'] / ours['seconds']:.2f}×", _mb(ours["peak_kb"]),
                     f"{same_bytes} / {same_weights}"])
    lines += table(["row", "seconds", "CPU seconds", "speed-up vs first", "peak MB",
                    "identical bytecode / weights"], rows)
    return lines + [""]


def notes(records: list[dict]) -> list[str]:
    lines = []
    for record in records:
        for impl in ("ours", "ref"):
            result = record.get(impl)
            if not result:
                continue
            name = f"{record['model']} {record['row']} [{impl}]"
            if not result["ok"]:
                lines.append(f"- {name}: {result['error']}")
                continue
            if result.get("fidelity", {}).get("error"):
                lines.append(f"- {name}: fidelity not measured: {result['fidelity']['error']}")
            if result.get("warnings"):
                lines.append(f"- {name}: {result['warnings']} distinct warning(s), e.g. "
                             f"\"{_cell(result['warning_examples'][0], 240)}\"")
            if not result.get("worker_processes") and result.get("children_peak_kb", 0) > result["peak_kb"]:
                lines.append(f"- {name}: a child process peaked at {_mb(result['children_peak_kb'])} MB "
                             f"(its `ru_maxrss`; not in the peak column)")
    aborts = sum(r[i].get("fidelity", {}).get("runtime_aborts", 0) for r in records for i in ("ours", "ref")
                 if r.get(i) and r[i]["ok"])
    if aborts:
        lines.append(f"- The Core AI runtime aborted {aborts} time(s) while loading an asset (\"C++ exception "
                     "handling detected but the Swift runtime was compiled with exceptions disabled\", any "
                     "asset, at random); each such run was retried.")
    return ["## Failures and notes", "", *lines, ""] if lines else []


def render(info: dict, baselines: dict, records: list[dict], args) -> str:
    from models import Synthetic

    run = {r["model"] for r in records}
    weights = {Synthetic(b).name: Synthetic(b).weight_count
               for b in (args.synthetic_blocks, args.scaling_blocks) if b and Synthetic(b).name in run}
    command = " ".join(shlex.quote(a) for a in [sys.executable, "bench/run.py", *sys.argv[1:]])
    lines = ["# Weight-compression benchmark", "", f"Command: `{command}`", ""]
    lines += [f"- **{key}**: {value}" for key, value in info.items()]
    lines += ["", "Each row runs in a fresh process (`bench/_row.py`): *s* is the compress call alone "
              "(`in_place=False`), *peak MB* is that process's peak resident memory (`VmHWM`; input "
              "program included; see README for why not `ru_maxrss`) plus, for ours, the peak of each "
              "clustering worker process it started (a sum of peaks, so an upper bound); *CPU seconds* "
              "include those workers. "
              "*bytes* are the saved `.aimodel` directory. MiniLM fidelity: cosine of the mean-pooled "
              "sentence embeddings (Core AI runtime) to the fp32 PyTorch reference, mean/min over 8 "
              "sentences. Synthetic fidelity: SNR of all decoded weights against the originals "
              "(worst single weight in parentheses), decoded with our reader. Speed-up = ref s / ours s.", ""]
    for name, fid in baselines.items():
        lines.append(f"Uncompressed {name} in the runtime: cosine mean/min {fidelity_text(fid)}, "
                     f"non-finite {fid.get('non_finite')}.")
    for name, count in weights.items():
        lines.append(f"{name}: {count:,} weights ({count * 2 / 1e9:.2f} GB float16).")
    lines += ["", "## Results", ""]
    lines += table(COLUMNS, [row_cells(r) for r in records if "@" not in r["row"]])
    main_model = Synthetic(args.synthetic_blocks).name
    lines += [""] + scaling_section(records, weights) + workers_section(records, main_model) + notes(records)
    return "\n".join(lines).rstrip() + "\n"
