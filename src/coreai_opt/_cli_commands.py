"""What each ``coreai-opt`` command does, given its parsed arguments.

Each ``run_*`` function returns the exit code (0) or raises ``CliError``; the
parser and the error reporting live in :mod:`coreai_opt.cli`, the formatting in
:mod:`coreai_opt.report`.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from . import report as fmt
from ._cli_assets import (
    EXIT_USAGE,
    CliError,
    ProgressBar,
    asset_bytes,
    check_asset,
    check_output,
    check_report_path,
    load_program,
    save_atomically,
    stage_text,
)

_N_M = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*$")


def _input_path(args) -> Path:
    """The asset a command reads: the positional input or, with ``--example``, the bundled model."""
    if getattr(args, "example", False):
        if args.input is not None:
            raise CliError("give either an input asset or --example, not both", EXIT_USAGE)
        return _bundled_example()
    if args.input is None:
        raise CliError("missing the input asset (a path to an .aimodel, or --example)", EXIT_USAGE)
    return args.input


def _bundled_example() -> Path:
    from .examples import example_path

    try:
        return example_path()
    except FileNotFoundError as error:
        raise CliError(str(error)) from None


def _compared_paths(args) -> tuple[Path, Path]:
    """(reference, candidate) of ``compare``: both positionals, or ``--example`` and one."""
    given = [path for path in (args.reference, args.candidate) if path is not None]
    if args.example:
        if len(given) != 1:
            raise CliError("with --example give one asset, B.aimodel, to compare with the bundled model "
                           f"(got {len(given)})", EXIT_USAGE)
        return _bundled_example(), given[0]
    if len(given) != 2:
        raise CliError("compare needs two assets: A.aimodel B.aimodel (or --example B.aimodel)", EXIT_USAGE)
    return given[0], given[1]


def _none_or(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value


def palettize_kwargs(args) -> dict[str, Any]:
    """``palettize_weights`` keyword arguments from the command line, validated by the API."""
    from .coreai_utils._passes.options import PalettizeOptions

    kwargs = dict(
        lut_dtype=_none_or(args.lut_dtype), n_bits=args.n_bits, granularity=args.granularity,
        group_size=args.group_size, cluster_dim=args.cluster_dim,
        enable_per_channel_scale=args.per_channel_scale, weight_num_threshold=args.threshold,
        num_kmeans_workers=args.workers, enable_fast_kmeans_mode=not args.exact,
        rounding_precision=args.rounding_precision,
    )
    try:
        PalettizeOptions(**kwargs)
    except ValueError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    return kwargs


def parse_n_m(text: str) -> tuple[int, int] | str:
    """``"2:4"`` -> ``(2, 4)``; anything else is returned as is for the API to reject."""
    match = _N_M.match(text)
    return (int(match.group(1)), int(match.group(2))) if match else text


def sparsify_kwargs(args) -> dict[str, Any]:
    """``sparsify_weights`` keyword arguments from the command line, validated by the API."""
    from .coreai_utils._passes.options import SparsifyOptions

    n_m = parse_n_m(args.n_m) if args.n_m is not None else None
    target = args.sparsity if args.sparsity is not None else (None if n_m is not None else 0.5)
    kwargs = dict(
        target_sparsity=target, block_size=args.block_size, n_m_ratio=n_m,
        quantize_dtype=_none_or(args.quantize), palettize_nbits=args.palettize_bits,
        weight_num_threshold=args.threshold,
    )
    try:
        SparsifyOptions(**kwargs)
    except ValueError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    return kwargs


def _compress(program, command: str, kwargs: dict[str, Any], quiet: bool):
    """Run the pass with a report collector, the progress bar and warnings captured."""
    from .coreai_utils import CompressionWarning, collect_reports, palettize_weights, sparsify_weights
    from .coreai_utils._passes.report import observe_progress

    function = palettize_weights if command == "palettize" else sparsify_weights
    bar = ProgressBar(sys.stderr, enabled=not quiet and sys.stderr.isatty())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", CompressionWarning)
        try:
            with collect_reports() as reports, observe_progress(bar):
                compressed = function(program, **kwargs)
        except ValueError as error:
            raise CliError(str(error), EXIT_USAGE) from None
        except Exception as error:  # noqa: BLE001
            raise CliError(f"{command} failed: {error}") from None
        finally:
            bar.close()
    messages = [str(w.message) for w in caught if issubclass(w.category, CompressionWarning)]
    return compressed, reports[-1], messages


def run_compress(args, command: str) -> int:
    """``palettize`` / ``sparsify``: compress, save atomically, print the table (and write --report)."""
    kwargs = palettize_kwargs(args) if command == "palettize" else sparsify_kwargs(args)
    source = _input_path(args)
    output = check_output(args.output, source)
    if args.report is not None:
        check_report_path(args.report, source, output)
    program, metadata = load_program(source)
    size_before = asset_bytes(source)
    compressed, report, messages = _compress(program, command, kwargs, args.quiet)

    staged_report: Path | None = None

    def write_report(staged: Path) -> None:
        nonlocal staged_report
        if args.report is None:
            return
        document = fmt.compression_document(
            report, command=command, input_path=str(Path(source).absolute()),
            output_path=str(Path(output).absolute()), asset_bytes_before=size_before,
            asset_bytes_after=asset_bytes(staged), warnings=messages)
        staged_report = stage_text(args.report, fmt.to_json(document))

    try:
        size_after = save_atomically(compressed, output, metadata, before_commit=write_report)
        if staged_report is not None:
            os.replace(staged_report, args.report)
    finally:
        if staged_report is not None and staged_report.exists():
            staged_report.unlink()

    if not args.quiet:
        for message in messages:
            print(f"coreai-opt: warning: {message}", file=sys.stderr)
    print(f"{command}: {source} -> {output}")
    print(fmt.compression_table(report))
    print()
    print(fmt.compression_totals(report, size_before, size_after))
    if args.report is not None:
        print(f"report: {args.report}")
    return 0


def run_inspect(args) -> int:
    """``inspect``: one row per weight with its storage, plus totals (or the JSON document)."""
    from .coreai_utils import inspect_weights

    source = _input_path(args)
    program, _ = load_program(source)
    try:
        weights = inspect_weights(program)
    except Exception as error:  # noqa: BLE001
        raise CliError(f"cannot inspect {source}: {error}") from None
    size = asset_bytes(source)
    if args.json:
        sys.stdout.write(fmt.to_json(fmt.inspect_document(weights, asset_path=str(Path(source).absolute()),
                                                          asset_bytes=size)))
        return 0
    print(f"{source}")
    print(fmt.inspect_table(weights))
    print()
    print(fmt.inspect_totals(weights, size))
    return 0


def _describe_specs(specs) -> str:
    return ", ".join(f"{s.name} ({fmt.format_shape(s.shape)} {s.dtype})" for s in specs)


def _load_inputs(path: Path, specs) -> dict:
    """Inputs from an .npz file, checked against the model's inputs (same-kind dtypes are cast)."""
    import numpy as np

    if not path.is_file():
        raise CliError(f"inputs file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as error:  # noqa: BLE001
        raise CliError(f"cannot read inputs file {path} (expected an .npz archive): {error}") from None
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise CliError(f"inputs file {path} lacks {', '.join(missing)}; the model takes {_describe_specs(specs)}")
    inputs = {}
    for spec in specs:
        array = arrays[spec.name]
        if tuple(array.shape) != tuple(spec.shape):
            raise CliError(f"input {spec.name} in {path} has shape {fmt.format_shape(array.shape)}; "
                           f"the model takes {fmt.format_shape(spec.shape)}")
        if array.dtype != spec.dtype:
            float_target = spec.dtype.kind == "V" and array.dtype.kind == "f"  # bfloat16, float8 (ml_dtypes)
            if not float_target and not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
                raise CliError(f"input {spec.name} in {path} has dtype {array.dtype}; the model takes {spec.dtype}")
            array = array.astype(spec.dtype)
        inputs[spec.name] = array
    return inputs


def run_compare(args) -> int:
    """``compare``: run both assets on the same inputs, print per-output closeness."""
    from .runtime import RuntimeRunError, compare, input_specs, random_inputs, run_asset

    reference, candidate = _compared_paths(args)
    check_asset(reference, "reference")
    check_asset(candidate, "candidate")
    try:
        specs = input_specs(reference, args.function)
        other = input_specs(candidate, args.function)
    except KeyError as error:
        raise CliError(str(error.args[0]) if error.args else str(error)) from None
    except Exception as error:  # noqa: BLE001
        raise CliError(f"cannot read the inputs of function {args.function}: {error}") from None
    if [(s.name, tuple(s.shape), s.dtype) for s in specs] != [(s.name, tuple(s.shape), s.dtype) for s in other]:
        raise CliError(f"the models take different inputs: {_describe_specs(specs)} vs {_describe_specs(other)}")
    inputs = _load_inputs(args.inputs, specs) if args.inputs is not None else random_inputs(specs, args.seed)
    try:
        expected = run_asset(reference, inputs, args.function)
        actual = run_asset(candidate, inputs, args.function)
    except RuntimeRunError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or ["the runtime failed"]
        detail = f": {lines[-1]}" if len(lines) > 1 else ""
        raise CliError(lines[0].rstrip(":") + detail) from None
    rows = []
    for name, value in expected.items():
        if name not in actual:
            raise CliError(f"the candidate has no output {name}; it has {', '.join(actual) or 'none'}")
        if actual[name].shape != value.shape:
            raise CliError(f"output {name} has shape {fmt.format_shape(value.shape)} in the reference and "
                           f"{fmt.format_shape(actual[name].shape)} in the candidate")
        rows.append((name, value.shape, compare(value, actual[name])))
    if args.json:
        sys.stdout.write(fmt.to_json(fmt.comparison_document(
            rows, reference=str(Path(reference).absolute()), candidate=str(Path(candidate).absolute()),
            function=args.function, inputs=None if args.inputs is None else str(Path(args.inputs).absolute()),
            seed=None if args.inputs is not None else args.seed)))
        return 0
    where = f"inputs from {args.inputs}" if args.inputs is not None else f"random inputs (seed {args.seed})"
    print(f"compare: {reference} (reference) vs {candidate}, function {args.function}, {where}")
    print(fmt.comparison_table(rows))
    return 0
