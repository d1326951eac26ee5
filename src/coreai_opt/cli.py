"""``coreai-opt``: compress, inspect and compare Core AI model assets from the shell.

Commands: ``palettize``, ``sparsify``, ``inspect``, ``compare``. This module
parses the command line and turns failures into one ``coreai-opt: error:`` line
and an exit code; :mod:`coreai_opt._cli_commands` does the work and
:mod:`coreai_opt.report` the formatting.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from ._cli_assets import EXIT_FAILURE, EXIT_USAGE, CliError

PROG = "coreai-opt"
TRACEBACK_ENV = "COREAI_OPT_TRACEBACK"

EXIT_CODES = f"""\
exit codes:
  0  success
  1  the command failed: missing, unreadable or corrupt input, an inputs file that
     does not fit the model, an output location that cannot be written, a failure
     while compressing, saving or running a model
  2  usage error: invalid command line or option values, an output path that is
     the input (or inside it) or does not end in .aimodel

Outputs are written atomically: saved next to the output, then renamed into place;
a failure leaves no partial asset and an existing output as it was. The input is
never modified. Set {TRACEBACK_ENV}=1 to see a traceback for an unexpected error."""

MAIN_EPILOG = f"""\
examples:
  coreai-opt palettize --example -o small-4bit.aimodel
  coreai-opt palettize model.aimodel -o model-4bit.aimodel --n-bits 4 --granularity per_grouped_channel
  coreai-opt sparsify model.aimodel -o model-sparse.aimodel --sparsity 0.5 --quantize int8
  coreai-opt inspect model-4bit.aimodel
  coreai-opt compare model.aimodel model-4bit.aimodel

run 'coreai-opt COMMAND --help' for the options of a command.

{EXIT_CODES}"""

PALETTIZE_EPILOG = f"""\
Each float weight with more than --threshold elements that only weight ops read
(matmul, conv2d, gather_nd, transpose) becomes n-bit indices into k-means look-up
tables; the others are listed as skipped, with the reason.

examples:
  coreai-opt palettize --example -o small-4bit.aimodel
  coreai-opt palettize model.aimodel -o model-4bit.aimodel --report report.json
  coreai-opt palettize model.aimodel -o model-3bit.aimodel --n-bits 3 --granularity per_channel
  coreai-opt palettize model.aimodel -o model-g.aimodel --granularity per_grouped_channel --group-size 16
  coreai-opt palettize model.aimodel -o model-q.aimodel --lut-dtype int8 --per-channel-scale
  coreai-opt palettize model.aimodel -o model-vec.aimodel --n-bits 8 --cluster-dim 2 --exact

{EXIT_CODES}"""

SPARSIFY_EPILOG = f"""\
Each float weight with more than --threshold elements that only weight ops read
is pruned and stored as its non-zero values plus a bitmask; the others are listed
as skipped, with the reason.

examples:
  coreai-opt sparsify --example -o small-sparse.aimodel
  coreai-opt sparsify model.aimodel -o model-75.aimodel --sparsity 0.75
  coreai-opt sparsify model.aimodel -o model-2-4.aimodel --n-m 2:4
  coreai-opt sparsify model.aimodel -o model-blocks.aimodel --sparsity 0.5 --block-size 4
  coreai-opt sparsify model.aimodel -o model-sq.aimodel --quantize int8 --report report.json
  coreai-opt sparsify model.aimodel -o model-sp.aimodel --palettize-bits 4

{EXIT_CODES}"""

INSPECT_EPILOG = f"""\
Lists every weight (a float constant read by a weight op, or a decompression
chain's output) with its shape, element type, consumers, stored size and how it
is stored: dense, palettized (bits, LUT shape and type), sparse (density and
how the non-zeros are stored) or quantized.

examples:
  coreai-opt inspect model.aimodel
  coreai-opt inspect --example
  coreai-opt inspect model-4bit.aimodel --json > weights.json

{EXIT_CODES}"""

COMPARE_EPILOG = f"""\
Runs both assets in the Core AI runtime on the same inputs and prints, for each
output, the cosine similarity, SNR and PSNR (dB), max absolute error and the
number of non-finite values of the candidate against the reference. Without
--inputs the inputs are seeded random values: standard normal for float inputs,
integers in [0, 100) for integer inputs.

examples:
  coreai-opt compare model.aimodel model-4bit.aimodel
  coreai-opt compare --example small-4bit.aimodel          # the bundled model is the reference
  coreai-opt compare model.aimodel model-4bit.aimodel --seed 1 --json
  coreai-opt compare model.aimodel model-4bit.aimodel --inputs inputs.npz   # arrays named like the inputs

{EXIT_CODES}"""

STORAGE_TYPES = "int8, uint8, fp8_e4m3fn, fp8_e5m2"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``coreai-opt: error:`` line and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        hint = f"run '{self.prog} --help' for usage"
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} ({hint})\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", type=Path, metavar="IN.aimodel", help="the model asset to read")
    parser.add_argument("--example", action="store_true",
                        help="read the example model bundled with coreai-opt instead of IN.aimodel")


def _add_compress_common(parser: argparse.ArgumentParser) -> None:
    _add_source(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.aimodel",
                        help="where to write the compressed asset (replaced if it exists)")


def _add_compress_tail(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=int, default=1024, metavar="N",
                        help="leave weights with at most N elements as they are (default: 1024)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bar and no warnings on stderr")
    parser.add_argument("--report", type=Path, metavar="FILE.json",
                        help="also write the per-weight report, with asset sizes on disk, as JSON")


def _palettize_parser(commands) -> None:
    parser = commands.add_parser(
        "palettize", help="replace weights by n-bit indices into look-up tables (k-means)",
        description="Palettize the weights of a Core AI model asset.",
        epilog=PALETTIZE_EPILOG, formatter_class=_formatter)
    _add_compress_common(parser)
    parser.add_argument("--n-bits", type=int, default=4, metavar="N",
                        help="bits per index: 1, 2, 3, 4, 6 or 8 (default: 4)")
    parser.add_argument("--granularity", default="per_tensor", metavar="G",
                        help="one LUT per_tensor, per_channel or per_grouped_channel (default: per_tensor)")
    parser.add_argument("--group-size", type=int, default=32, metavar="N",
                        help="output channels per LUT with per_grouped_channel (default: 32)")
    parser.add_argument("--lut-dtype", default=None, metavar="T",
                        help=f"store LUTs quantized: {STORAGE_TYPES} (default: none, the weight's float type)")
    parser.add_argument("--cluster-dim", type=int, default=1, metavar="N",
                        help="cluster vectors of N elements (vector palettization; default: 1)")
    parser.add_argument("--per-channel-scale", action="store_true",
                        help="normalize each output channel before clustering")
    parser.add_argument("--workers", type=int, default=4, metavar="N",
                        help="threads and worker processes clustering weights; the result does not depend on it "
                             "(default: 4, at most one per CPU)")
    parser.add_argument("--exact", action="store_true",
                        help="start the clustering from the exact weights instead of weights rounded to "
                             "--rounding-precision (enable_fast_kmeans_mode=False)")
    parser.add_argument("--rounding-precision", type=int, default=4, metavar="D",
                        help="decimals the fast k-means mode rounds weights to (default: 4)")
    _add_compress_tail(parser)
    parser.set_defaults(command="palettize")


def _sparsify_parser(commands) -> None:
    parser = commands.add_parser(
        "sparsify", help="prune weights and store their non-zeros with a bitmask",
        description="Sparsify the weights of a Core AI model asset.",
        epilog=SPARSIFY_EPILOG, formatter_class=_formatter)
    _add_compress_common(parser)
    parser.add_argument("--sparsity", type=float, default=None, metavar="S",
                        help="fraction of each weight set to zero, lowest magnitudes first (default: 0.5)")
    parser.add_argument("--n-m", default=None, metavar="N:M",
                        help="instead of --sparsity: zero the N smallest of every M consecutive input-channel "
                             "elements, e.g. 2:4")
    parser.add_argument("--block-size", type=int, default=None, metavar="N",
                        help="with --sparsity: prune whole blocks of N output channels (N > 1)")
    parser.add_argument("--quantize", default=None, metavar="T",
                        help=f"store the non-zeros quantized: {STORAGE_TYPES}")
    parser.add_argument("--palettize-bits", type=int, default=None, metavar="N",
                        help="store the non-zeros palettized with N bits: 1, 2, 3, 4, 6 or 8")
    _add_compress_tail(parser)
    parser.set_defaults(command="sparsify")


def build_parser() -> argparse.ArgumentParser:
    """The ``coreai-opt`` argument parser with its four commands."""
    parser = _Parser(prog=PROG, description="Compress, inspect and compare Core AI model assets (.aimodel).",
                     epilog=MAIN_EPILOG, formatter_class=_formatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    _palettize_parser(commands)
    _sparsify_parser(commands)

    inspect = commands.add_parser(
        "inspect", help="list the weights of an asset and how each is stored",
        description="List the weights of a Core AI model asset.", epilog=INSPECT_EPILOG, formatter_class=_formatter)
    _add_source(inspect)
    inspect.add_argument("--json", action="store_true", help="print a JSON document instead of a table")

    compare = commands.add_parser(
        "compare", help="run two assets on the same inputs and compare their outputs",
        usage=f"{PROG} compare [-h] (A.aimodel | --example) B.aimodel [options]",
        description="Compare the outputs of two Core AI model assets.", epilog=COMPARE_EPILOG,
        formatter_class=_formatter)
    compare.add_argument("reference", nargs="?", type=Path, metavar="A.aimodel", help="the reference asset")
    compare.add_argument("candidate", nargs="?", type=Path, metavar="B.aimodel", help="the asset to compare with it")
    compare.add_argument("--example", action="store_true",
                         help="use the example model bundled with coreai-opt as the reference (A.aimodel)")
    compare.add_argument("--inputs", type=Path, default=None, metavar="FILE.npz",
                         help="inputs as an .npz archive with one array per input name (default: random)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    compare.add_argument("--function", default="main", help="the function to run (default: main)")
    compare.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    return parser


def _dispatch(args) -> int:
    from . import _cli_commands as commands

    if args.command in ("palettize", "sparsify"):
        return commands.run_compress(args, args.command)
    if args.command == "inspect":
        return commands.run_inspect(args)
    return commands.run_compare(args)


def main(argv: list[str] | None = None) -> int:
    """Run ``coreai-opt`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version and usage errors
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    if args.command is None:
        print(f"{PROG}: error: choose a command: palettize, sparsify, inspect or compare "
              f"(run '{PROG} --help' for usage)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _dispatch(args)
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as error:  # noqa: BLE001 - one line instead of a traceback
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{PROG}: error: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
