"""Run ``coreai-opt`` and look at what it leaves on disk (tests/test_cli*.py)."""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

CLI = [sys.executable, "-m", "coreai_opt"]


def run_cli(*args, cwd=None, stderr=subprocess.PIPE, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=stderr, text=True,
                          cwd=cwd, timeout=timeout)


def run_main(capsys, *args) -> subprocess.CompletedProcess:
    """``coreai_opt.cli.main`` in this process (for the many cheap error cases), like ``run_cli``."""
    from coreai_opt import cli

    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def tree_digest(path: pathlib.Path) -> dict[str, str]:
    """sha256 of every file under ``path``, by relative path (a file: itself)."""
    path = pathlib.Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f.relative_to(path) if f != path else f.name): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in files}


def asset_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


def resource_constant_bytes(path: pathlib.Path) -> dict[str, int]:
    """Bytes of each resource constant of the asset at ``path``, by constant id."""
    from coreai.authoring import AIModelAsset

    from coreai_opt.coreai_utils import _ir
    from coreai_opt.coreai_utils._dtypes import storage_bytes

    module = _ir.mlir_module(AIModelAsset.load(str(path)).program)
    sizes = {}
    for site in _ir.iter_constants(module):
        if site.is_resource:
            try:
                sizes[site.id] = storage_bytes(site.size, site.element_type)
            except TypeError:
                continue
    return sizes


def error_line(done: subprocess.CompletedProcess) -> str:
    """The single line a failed command prints on stderr."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("coreai-opt: error: "), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    return lines[0]


def leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in pathlib.Path(folder).iterdir() if ".tmp" in p.name)


def run_many(commands: list[list], cwd=None) -> list[subprocess.CompletedProcess]:
    """Run independent commands two at a time (they mostly wait on imports)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda args: run_cli(*args, cwd=cwd), commands))
