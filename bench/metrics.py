"""Fidelity of compressed assets (measured in OUR environment) and the machine description."""

from __future__ import annotations

import datetime
import hashlib
import os
import pathlib
import platform
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Fidelity:
    """What a compressed asset computes, compared with the uncompressed model."""

    cos_mean: float | None = None  # MiniLM: sentence-embedding cosine to the fp32 reference
    cos_min: float | None = None
    non_finite: int | None = None
    snr_db: float | None = None  # synthetic: SNR of all decoded weights vs the originals
    min_snr_db: float | None = None  # the worst single weight
    digest: str | None = None  # sha256 of the decoded weights (bit-identity checks)
    runtime_aborts: int = 0  # Core AI runtime aborts retried before a run succeeded
    error: str | None = None


RUNTIME_ATTEMPTS = 8


def minilm_fidelity(model, asset: pathlib.Path) -> Fidelity:
    """Run ``asset`` in the Core AI runtime on MiniLM's sentences; cosines vs PyTorch fp32."""
    from coreai_opt.runtime import RuntimeRunError, run_asset

    aborts = 0
    while True:
        try:
            outputs = run_asset(asset, model.inputs)
            break
        except RuntimeRunError as error:
            # The runtime aborts now and then at load, for any asset ("C++ exception handling
            # detected but the Swift runtime was compiled with exceptions disabled"): retry.
            aborts += 1
            if aborts >= RUNTIME_ATTEMPTS:
                return Fidelity(error=f"{error}".strip().splitlines()[-1], runtime_aborts=aborts)
            time.sleep(5 * aborts)  # the aborts come in bursts: back off
    (hidden,) = outputs.values()
    non_finite = int(hidden.size - np.count_nonzero(np.isfinite(hidden)))
    with np.errstate(invalid="ignore"):
        cosines = model.cosines(hidden)
    return Fidelity(cos_mean=float(cosines.mean()), cos_min=float(cosines.min()), non_finite=non_finite,
                    runtime_aborts=aborts)


def decoded_weights(asset: pathlib.Path):
    """Yield (name, decoded array) for each weight of ``asset`` in program order, decoding
    every decompression chain in numpy with our reader (works on the reference's assets too)."""
    from coreai.authoring import AIModelAsset

    from coreai_opt.coreai_utils._encoding import decode
    from coreai_opt.coreai_utils._ir import BlobReader, mlir_module
    from coreai_opt.coreai_utils._ir.decompress import expression_of
    from coreai_opt.coreai_utils._ir.weights import stored_weights

    program = AIModelAsset.load(str(asset)).program
    module = mlir_module(program)
    size = sum(f.stat().st_size for f in pathlib.Path(asset).rglob("*") if f.is_file())
    blobs = BlobReader(module.operation, size)
    try:
        for weight in stored_weights(module):
            node = expression_of(weight.value, blobs)
            if node is not None:
                yield weight.name, decode(node)
    finally:
        blobs.close()


def synthetic_fidelity(spec, asset: pathlib.Path) -> Fidelity:
    """SNR (dB) of the decoded weights of ``asset`` against the synthetic originals (regenerated
    from the seed), over all weights together and for the worst weight; plus a digest."""
    signal = noise = 0.0
    worst = np.inf
    digest = hashlib.sha256()
    count = 0
    non_finite = 0
    try:
        for index, (name, decoded) in enumerate(decoded_weights(asset)):
            original = spec.weight(index).astype(np.float64)
            if decoded.shape != original.shape:
                raise ValueError(f"weight {index} ({name}): shape {decoded.shape} != {original.shape}")
            digest.update(np.ascontiguousarray(decoded).tobytes())
            decoded = decoded.astype(np.float64)
            non_finite += int(decoded.size - np.count_nonzero(np.isfinite(decoded)))
            s, n = float(np.sum(original * original)), float(np.sum((decoded - original) ** 2))
            signal, noise = signal + s, noise + n
            worst = min(worst, _db(s, n))
            count += 1
        if count != len(spec.shapes()):
            raise ValueError(f"{count} weights decoded, {len(spec.shapes())} expected")
    except Exception as error:  # noqa: BLE001 - recorded in the table
        return Fidelity(error=f"{type(error).__name__}: {error}")
    return Fidelity(snr_db=_db(signal, noise), min_snr_db=worst, digest=digest.hexdigest(),
                    non_finite=non_finite)


def _db(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def bytecode_digest(asset: pathlib.Path) -> str:
    """sha256 of an asset's files except its metadata (which carries a creation date)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in pathlib.Path(asset).rglob("*") if p.is_file()):
        if "metadata" in path.name.lower() or path.suffix == ".json":
            continue
        digest.update(path.relative_to(asset).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def source_state(repo: pathlib.Path, package: pathlib.Path) -> str:
    """Git commit, edited files under src/ and a content hash of the snapshot ``package``."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip()

    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + path.read_bytes())
    edited = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line.strip()]
    return (f"commit {git('rev-parse', '--short', 'HEAD')} + {len(edited)} uncommitted change(s) under src/, "
            f"snapshot sha256 {digest.hexdigest()[:12]}")


def machine() -> dict[str, str]:
    """CPU, cores, RAM, versions and date, for the results header."""
    from importlib import metadata

    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        ram_kb = int(next(line for line in info if line.startswith("MemTotal")).split()[1])

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "CPU": f"{cpu} ({os.cpu_count()} cores visible, {len(os.sched_getaffinity(0))} usable)",
        "RAM": f"{ram_kb / 2**20:.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "numpy": np.__version__,
        "coreai-core": version("coreai-core"),
        "coreai-opt (ours)": version("coreai-weight-compress"),
        "load average (1/5/15 min) at start": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }
