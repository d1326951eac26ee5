"""Run saved Core AI assets in the Core AI runtime and compare their outputs.

Each run happens in a child process: a fault inside the runtime can abort the
whole process (it is Swift underneath), and that must not take the caller down.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .coreai_utils._dtypes import numpy_dtype


_DTYPE_SUFFIX = "__coreai_opt_dtype"


class RuntimeRunError(RuntimeError):
    """The Core AI runtime could not run the asset (the message carries its output)."""


@dataclass(frozen=True)
class InputSpec:
    """Name, shape and numpy dtype of one function input."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def input_specs(asset_path: str | Path, function: str = "main") -> list[InputSpec]:
    """The inputs ``function`` of the asset at ``asset_path`` takes."""
    from coreai.authoring import AIModelAsset

    from .coreai_utils._ir import mlir_module
    from .coreai_utils._ir.signature import graph_inputs

    program = AIModelAsset.load(str(asset_path)).program
    return [InputSpec(s.name, s.shape, numpy_dtype(s.element_type))
            for s in graph_inputs(mlir_module(program), function)]


def random_inputs(specs: list[InputSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the right shapes: standard normal floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        if spec.dtype.kind == "f" or spec.dtype.kind == "V":
            inputs[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            inputs[spec.name] = rng.integers(0, 2, spec.shape).astype(bool)
        else:
            inputs[spec.name] = rng.integers(0, 100, spec.shape).astype(spec.dtype)
    return inputs


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` that keeps ml_dtypes element types (bfloat16, float8...), which npz would lose."""
    stored: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.kind == "V":  # an ml_dtypes type: store its bits and its name
            stored[name] = array.view(f"u{array.dtype.itemsize}")
            stored[f"{name}{_DTYPE_SUFFIX}"] = np.array(array.dtype.name)
        else:
            stored[name] = array
    np.savez(path, **stored)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Inverse of :func:`save_arrays`."""
    import ml_dtypes

    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files if not name.endswith(_DTYPE_SUFFIX)}
        for name in arrays:
            if f"{name}{_DTYPE_SUFFIX}" in data.files:
                arrays[name] = arrays[name].view(getattr(ml_dtypes, str(data[f"{name}{_DTYPE_SUFFIX}"])))
    return arrays


def run_asset(asset_path: str | Path, inputs: dict[str, np.ndarray], function: str = "main",
              timeout: float = 900.0) -> dict[str, np.ndarray]:
    """Outputs of ``function`` of the asset at ``asset_path`` on ``inputs``, by output name."""
    with tempfile.TemporaryDirectory(prefix="coreai_opt_run_") as tmp:
        in_path, out_path = Path(tmp, "inputs.npz"), Path(tmp, "outputs.npz")
        save_arrays(in_path, inputs)
        command = [sys.executable, "-m", "coreai_opt._runtime_child", str(asset_path), str(in_path),
                   str(out_path), function]
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "TMPDIR": tmp}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as error:
            raise RuntimeRunError(f"the Core AI runtime did not finish within {timeout:.0f} s") from error
        if done.returncode != 0 or not out_path.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
            raise RuntimeRunError(f"the Core AI runtime failed (exit code {done.returncode}):\n" + "\n".join(tail))
        return load_arrays(out_path)


@dataclass(frozen=True)
class OutputComparison:
    """How close one output is to its reference."""

    cosine: float
    snr_db: float
    psnr_db: float
    max_abs_error: float
    non_finite: int


def compare(reference: np.ndarray, candidate: np.ndarray) -> OutputComparison:
    """Cosine similarity, SNR, PSNR and max abs error of ``candidate`` against ``reference``."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    out = np.asarray(candidate, dtype=np.float64).reshape(-1)
    non_finite = int(out.size - np.count_nonzero(np.isfinite(out)))
    error = ref - out
    noise = float(np.sum(error * error))
    signal = float(np.sum(ref * ref))
    norms = float(np.linalg.norm(ref) * np.linalg.norm(out))
    cosine = float(ref @ out / norms) if norms > 0 else (1.0 if noise == 0 else 0.0)
    snr = math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    mse = noise / max(ref.size, 1)
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse) if peak > 0 else -math.inf
    max_abs = float(np.max(np.abs(error))) if error.size else 0.0
    return OutputComparison(cosine, snr, psnr, max_abs, non_finite)
