"""Text tables and JSON documents for what the command line prints.

Pure formatting: every function takes data (``CompressionReport``, ``WeightInfo``
lists, output comparisons, sizes) and returns a string or a JSON-ready dict; no
I/O happens here. Sizes are shown in decimal units (1 kB = 1000 bytes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Longest weight or output name shown in a table before it is shortened.
MAX_NAME_WIDTH = 48
_UNITS = ("kB", "MB", "GB", "TB")


def human_bytes(count: int | float) -> str:
    """``512 B``, ``12.3 kB``, ``1.2 MB``: decimal units, one decimal above 1 kB."""
    value = float(count)
    if abs(value) < 1000:
        return f"{int(value)} B"
    for unit in _UNITS:
        value /= 1000.0
        if abs(value) < 999.95 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_shape(shape: Sequence[int]) -> str:
    """``384x384``; ``scalar`` for a 0-d shape."""
    return "x".join(str(int(d)) for d in shape) if len(shape) else "scalar"


def format_db(value: float | str | None) -> str:
    """A decibel value with one decimal, ``inf`` when exact, ``-`` when unknown."""
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.1f}"


def format_ratio(before: int, after: int) -> str:
    """``7.92x`` (how many times smaller ``after`` is)."""
    return f"{before / after:.2f}x" if after else "inf"


def shorten(text: str, width: int = MAX_NAME_WIDTH) -> str:
    """``text`` cut to ``width`` characters, with ``...`` in the middle when cut."""
    if len(text) <= width:
        return text
    keep = width - 3
    return text[: keep - keep // 2] + "..." + text[len(text) - keep // 2 :]


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> str:
    """Fixed-width columns separated by two spaces, a dashed rule under the header.

    ``align`` has one letter per column: ``l`` (left) or ``r`` (right). The last
    column is never padded, so a long description does not drag trailing spaces.
    """
    rows = [list(row) for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            last = i == len(widths) - 1
            if align[i] == "r":
                parts.append(cell.rjust(width))
            else:
                parts.append(cell if last else cell.ljust(width))
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as the strings ``inf``/``-inf``/``nan`` (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "value") and isinstance(value.value, str):  # str enums
        return value.value
    return value


def to_json(document: Mapping[str, Any]) -> str:
    """Indented, strict JSON text of a document."""
    return json.dumps(jsonable(document), indent=2, allow_nan=False) + "\n"


def progress_line(done: int, total: int, label: str, width: int = 80) -> str:
    """``[#######.......]  3/7  weight name``, at most ``width`` characters."""
    bar_width = max(10, min(30, width // 3))
    filled = bar_width if total <= 0 else round(bar_width * done / total)
    counter = f"{done}/{total}"
    text = f"[{'#' * filled}{'.' * (bar_width - filled)}]  {counter}  "
    room = width - len(text) - 1
    if room >= 8:
        text += shorten(label, room)
    return text[: max(width - 1, 1)]


# --- palettize / sparsify --------------------------------------------------------------------

def _weight_label(name: str, identifier: str) -> str:
    return shorten(name or identifier)


def _size_column(pairs: Sequence[tuple[int, int]]) -> list[str]:
    before = [human_bytes(b) for b, _ in pairs]
    after = [human_bytes(a) for _, a in pairs]
    wb = max((len(s) for s in before), default=0)
    wa = max((len(s) for s in after), default=0)
    return [f"{b.rjust(wb)} -> {a.rjust(wa)}" for b, a in zip(before, after, strict=True)]


def compression_table(report) -> str:
    """One row per weight of a ``CompressionReport``: name, shape, size before -> after, SNR, result."""
    weights = list(report.weights)
    if not weights:
        return "(no weights: no float constant is read by a weight op)"
    sizes = _size_column([(w.bytes_before, w.bytes_after) for w in weights])
    rows = []
    for weight, size in zip(weights, sizes, strict=True):
        result = weight.detail if weight.status == "compressed" else f"skipped: {weight.detail}"
        rows.append([_weight_label(weight.name, weight.id), format_shape(weight.shape), size,
                     format_db(weight.snr_db), result])
    return format_table(["weight", "shape", "size before -> after", "SNR dB", "result"], rows, "llrrl")


def compression_totals(report, asset_bytes_before: int, asset_bytes_after: int) -> str:
    """The weights' total size before/after, the asset's size on disk before/after and, when the
    clustering ran in worker processes, how many and their peak memory."""
    compressed, skipped = len(report.compressed), len(report.skipped)
    lines = [
        f"weights: {compressed} compressed, {skipped} skipped; "
        f"{human_bytes(report.bytes_before)} -> {human_bytes(report.bytes_after)} "
        f"({format_ratio(report.bytes_before, report.bytes_after)})",
        f"asset on disk: {human_bytes(asset_bytes_before)} -> {human_bytes(asset_bytes_after)} "
        f"({format_ratio(asset_bytes_before, asset_bytes_after)})",
    ]
    workers = report.worker_processes
    if workers:
        lines.append(f"clustering: {workers} worker process{'es' if workers > 1 else ''}, "
                     f"peak {human_bytes(report.worker_peak_bytes)} together")
    return "\n".join(lines)


def compression_document(report, *, command: str, input_path: str, output_path: str,
                         asset_bytes_before: int, asset_bytes_after: int,
                         warnings: Sequence[str] = ()) -> dict[str, Any]:
    """The ``--report`` JSON: ``CompressionReport.to_dict()`` plus paths and asset sizes on disk."""
    document: dict[str, Any] = {
        "command": command,
        "input": input_path,
        "output": output_path,
        "asset_bytes_before": asset_bytes_before,
        "asset_bytes_after": asset_bytes_after,
        "asset_ratio": asset_bytes_before / asset_bytes_after if asset_bytes_after else None,
        "compressed": len(report.compressed),
        "skipped": len(report.skipped),
    }
    document.update(report.to_dict())
    document["warnings"] = list(warnings)
    return jsonable(document)


# --- inspect ---------------------------------------------------------------------------------

def _consumers(consumers: Sequence[str]) -> str:
    names = [c.removeprefix("coreai.") for c in consumers]
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in seen.items()) or "-"


def inspect_table(weights: Sequence) -> str:
    """One row per ``WeightInfo``: name, shape, dtype, consumers, stored size, storage."""
    if not weights:
        return "(no weights: no float constant is read by a weight op)"
    rows = [[_weight_label(w.name, w.id), format_shape(w.shape), w.element_type, _consumers(w.consumers),
             human_bytes(w.bytes), w.storage] for w in weights]
    return format_table(["weight", "shape", "dtype", "consumers", "size", "storage"], rows, "llllrl")


def _storage_kind(storage: str) -> str:
    return storage.split(" ", 1)[0].rstrip(",")


def inspect_totals(weights: Sequence, asset_bytes: int) -> str:
    """Totals: weight count by storage kind, stored vs dense bytes, asset size on disk."""
    stored = sum(w.bytes for w in weights)
    dense = sum(w.dense_bytes for w in weights)
    kinds: dict[str, int] = {}
    for weight in weights:
        kind = _storage_kind(weight.storage)
        kinds[kind] = kinds.get(kind, 0) + 1
    by_kind = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    return "\n".join([
        f"weights: {len(weights)}" + (f" ({by_kind})" if by_kind else "")
        + f"; {human_bytes(stored)} stored, {human_bytes(dense)} dense ({format_ratio(dense, stored)})",
        f"asset on disk: {human_bytes(asset_bytes)}",
    ])


def inspect_document(weights: Sequence, *, asset_path: str, asset_bytes: int) -> dict[str, Any]:
    """The ``inspect --json`` document: every ``WeightInfo.to_dict()`` plus totals."""
    stored = sum(w.bytes for w in weights)
    dense = sum(w.dense_bytes for w in weights)
    return jsonable({
        "asset": asset_path,
        "asset_bytes": asset_bytes,
        "weight_count": len(weights),
        "weight_bytes": stored,
        "weight_dense_bytes": dense,
        "weights": [w.to_dict() for w in weights],
    })


# --- compare ---------------------------------------------------------------------------------

def format_cosine(value: float) -> str:
    """Cosine similarity with 6 decimals."""
    return "nan" if math.isnan(value) else f"{value:.6f}"


def format_error(value: float) -> str:
    """An absolute error with 3 significant digits (``0`` when exact)."""
    if math.isnan(value) or math.isinf(value):
        return format_db(value)
    return "0" if value == 0 else f"{value:.3g}"


def comparison_table(rows: Sequence[tuple[str, Sequence[int], Any]]) -> str:
    """One row per output ``(name, shape, OutputComparison)``."""
    lines = [[shorten(name), format_shape(shape), format_cosine(c.cosine), format_db(c.snr_db),
              format_db(c.psnr_db), format_error(c.max_abs_error), str(c.non_finite)]
             for name, shape, c in rows]
    return format_table(["output", "shape", "cosine", "SNR dB", "PSNR dB", "max abs err", "non-finite"],
                        lines, "llrrrrr")


def comparison_document(rows: Sequence[tuple[str, Sequence[int], Any]], *, reference: str, candidate: str,
                        function: str, inputs: str | None, seed: int | None) -> dict[str, Any]:
    """The ``compare --json`` document."""
    return jsonable({
        "reference": reference,
        "candidate": candidate,
        "function": function,
        "inputs": inputs,
        "seed": seed,
        "outputs": [
            {"name": name, "shape": [int(d) for d in shape], "cosine": c.cosine, "snr_db": c.snr_db,
             "psnr_db": c.psnr_db, "max_abs_error": c.max_abs_error, "non_finite": c.non_finite}
            for name, shape, c in rows
        ],
    })
