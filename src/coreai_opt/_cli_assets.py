"""File handling for the command line: check and load assets, write outputs atomically.

A damaged bytecode file can crash the process inside the Core AI bindings
(``AIModelAsset.load(path).program`` aborts instead of raising), so an input is
checked before it is loaded: it must be a directory holding ``main.mlirb`` that
starts with the MLIR bytecode magic, matches ``main.hash`` when there is one,
and parses (``ir.Module.parse`` raises a Python exception where the loader aborts).

Outputs are saved into a temporary directory next to the output and renamed into
place, so a failure never leaves a half-written asset behind and an existing
output is replaced only once the new one is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .report import progress_line

EXIT_FAILURE = 1
EXIT_USAGE = 2

BYTECODE = "main.mlirb"
HASH = "main.hash"
METADATA = "metadata.json"
_MLIR_MAGIC = b"ML\xefR"


class CliError(Exception):
    """A failure to report as one ``coreai-opt: error:`` line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _reason(error: BaseException) -> str:
    """The most telling line of an exception's message."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    return lines[-1] if lines else type(error).__name__


def asset_bytes(path: Path) -> int:
    """Total size of the files of an asset directory."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def check_asset(path: Path, role: str = "input") -> Path:
    """``path`` if it is a readable Core AI model asset, else raise ``CliError``."""
    if not path.exists():
        raise CliError(f"{role} not found: {path}")
    if not path.is_dir():
        raise CliError(f"{role} {path} is not a Core AI model asset (an .aimodel directory): it is a file")
    bytecode = path / BYTECODE
    if not bytecode.is_file():
        raise CliError(f"{role} {path} is not a Core AI model asset: it has no {BYTECODE}")
    try:
        data = bytecode.read_bytes()
        digest = (path / HASH).read_bytes() if (path / HASH).is_file() else None
        metadata = (path / METADATA).read_text(encoding="utf-8") if (path / METADATA).is_file() else None
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {role} {path}: {_reason(error)}") from None
    if not data.startswith(_MLIR_MAGIC):
        raise CliError(f"{role} {path} is corrupt: {BYTECODE} is not MLIR bytecode")
    if digest is not None and len(digest) == 32 and digest != hashlib.sha256(data).digest():
        raise CliError(f"{role} {path} is corrupt: {BYTECODE} does not match {HASH}")
    if metadata is not None:
        try:
            if not isinstance(json.loads(metadata), dict):
                raise ValueError("not a JSON object")
        except ValueError:
            raise CliError(f"{role} {path} is corrupt: {METADATA} is not a JSON object") from None
    try:
        from .coreai_utils._ir import check_bytecode

        check_bytecode(data)
    except Exception as error:  # noqa: BLE001 - any parse failure means a corrupt input
        raise CliError(f"{role} {path} is corrupt: {BYTECODE} cannot be parsed ({_reason(error)})") from None
    return path


def load_program(path: Path, role: str = "input"):
    """(program, metadata) of the asset at ``path``, checked first with :func:`check_asset`."""
    from coreai.authoring import AIModelAsset

    check_asset(path, role)
    try:
        asset = AIModelAsset.load(str(path))
        return asset.program, asset.metadata
    except Exception as error:  # noqa: BLE001
        raise CliError(f"cannot load {role} {path}: {_reason(error)}") from None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check_output(output: Path, source: Path) -> Path:
    """Refuse output paths that are not allowed or cannot be written, before any work."""
    if output.suffix != ".aimodel":
        raise CliError(f"the output must end in .aimodel: {output}", EXIT_USAGE)
    out, src = _real(output), _real(source)
    if out == src:
        raise CliError(f"the output is the input ({output}); write to another path", EXIT_USAGE)
    if src in out.parents:
        raise CliError(f"the output {output} is inside the input {source}", EXIT_USAGE)
    if out in src.parents:
        raise CliError(f"the output {output} contains the input {source}", EXIT_USAGE)
    parent = Path(os.path.abspath(output)).parent
    if not parent.exists():
        raise CliError(f"cannot write {output}: folder {parent} does not exist")
    if not parent.is_dir():
        raise CliError(f"cannot write {output}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"cannot write {output}: folder {parent} is not writable")
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise CliError(f"cannot replace {output}: it exists and is not an .aimodel directory")
    if output.is_dir() and any(output.iterdir()) and not (output / BYTECODE).is_file():
        raise CliError(f"refusing to replace {output}: it exists and is not a Core AI model asset")
    return output


def check_report_path(report: Path, *assets: Path) -> Path:
    """Refuse a ``--report`` path that cannot be written or lies inside an asset."""
    real = _real(report)
    for asset in assets:
        if real == _real(asset) or _real(asset) in real.parents:
            raise CliError(f"the report {report} must not be inside the asset {asset}", EXIT_USAGE)
    parent = Path(os.path.abspath(report)).parent
    if not parent.is_dir():
        raise CliError(f"cannot write report {report}: folder {parent} does not exist")
    if report.is_dir():
        raise CliError(f"cannot write report {report}: it is a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (report.exists() and not os.access(report, os.W_OK)):
        raise CliError(f"cannot write report {report}: permission denied")
    return report


def save_atomically(program, output: Path, metadata=None,
                    before_commit: Callable[[Path], None] | None = None) -> int:
    """Save ``program`` at ``output`` all or nothing; return the asset's size on disk.

    ``before_commit(staged_path)`` runs once the new asset is complete but before it
    replaces anything (a failure there leaves the file system as it was).
    """
    parent = Path(os.path.abspath(output)).parent
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{output.name}.tmp-", dir=parent))
    except OSError as error:
        raise CliError(f"cannot write {output}: {_reason(error)}") from None
    try:
        staged = staging / output.name
        try:
            program.save_asset(staged, metadata=metadata)
        except Exception as error:  # noqa: BLE001
            cause = error.__cause__ or error
            raise CliError(f"could not save {output}: {_reason(cause)}") from None
        size = asset_bytes(staged)
        if before_commit is not None:
            before_commit(staged)
        _swap_in(staged, output, staging / "previous")
        return size
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staged: Path, output: Path, aside: Path) -> None:
    """Rename ``staged`` to ``output``, moving an existing output aside first and back on failure."""
    moved = False
    try:
        if output.exists():
            os.rename(output, aside)
            moved = True
        os.rename(staged, output)
    except OSError as error:
        if moved and not output.exists():
            os.rename(aside, output)
        raise CliError(f"cannot write {output}: {_reason(error)}") from None


def stage_text(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``path``; ``os.replace`` it into place later."""
    parent = Path(os.path.abspath(path)).parent
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=parent)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        return Path(temporary)
    except OSError as error:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        raise CliError(f"cannot write {path}: {_reason(error)}") from None


class ProgressBar:
    """A one-line progress bar over weights on a terminal; silent when disabled."""

    def __init__(self, stream=None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self._drawn = 0

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.enabled:
            return
        width = shutil.get_terminal_size((80, 24)).columns
        line = progress_line(done, total, name, width)
        self.stream.write("\r" + line.ljust(self._drawn))
        self.stream.flush()
        self._drawn = len(line)

    def close(self) -> None:
        """Erase the bar, leaving the cursor at the start of an empty line."""
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0
