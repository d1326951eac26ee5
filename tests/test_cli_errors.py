"""``coreai-opt`` failures: one ``coreai-opt: error:`` line, the right exit code, nothing left behind."""

from __future__ import annotations

import os
import pathlib

import pytest

from coreai_opt.examples import example_path
from helpers.cli import error_line, leftovers, run_cli, run_main, run_many, tree_digest


# --- errors ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def broken_assets(work, small_asset) -> dict[str, pathlib.Path]:
    folder = work / "broken"
    folder.mkdir()
    data = (small_asset / "main.mlirb").read_bytes()
    made = {"file": folder / "file.aimodel", "empty": folder / "empty.aimodel",
            "garbage": folder / "garbage.aimodel", "truncated": folder / "truncated.aimodel",
            "tampered": folder / "tampered.aimodel"}
    made["file"].write_text("not a model")
    made["empty"].mkdir()
    for name, content, keep_hash in (("garbage", b"garbage", False), ("truncated", data[:3000], False),
                                     ("tampered", data[:-1] + bytes([data[-1] ^ 1]), True)):
        made[name].mkdir()
        (made[name] / "main.mlirb").write_bytes(content)
        (made[name] / "metadata.json").write_bytes((small_asset / "metadata.json").read_bytes())
        if keep_hash:
            (made[name] / "main.hash").write_bytes((small_asset / "main.hash").read_bytes())
    return made


BAD_INPUTS = [
    ("missing", "input not found: "),
    ("file", "is not a Core AI model asset (an .aimodel directory): it is a file"),
    ("empty", "is not a Core AI model asset: it has no main.mlirb"),
    ("garbage", "is corrupt: main.mlirb is not MLIR bytecode"),
    ("truncated", "is corrupt: main.mlirb cannot be parsed"),
    ("tampered", "is corrupt: main.mlirb does not match main.hash"),
]


def test_bad_inputs(broken_assets, work, small_asset):
    sources = [broken_assets.get(kind, work / "missing.aimodel") for kind, _ in BAD_INPUTS]
    before = [tree_digest(source) if source.exists() else None for source in sources]
    commands = [["palettize", source, "-o", work / f"never-{kind}.aimodel"]
                for (kind, _), source in zip(BAD_INPUTS, sources, strict=True)]
    commands += [["inspect", broken_assets["garbage"]], ["compare", small_asset, broken_assets["truncated"]]]
    results = run_many(commands)
    for (kind, message), done in zip(BAD_INPUTS, results[:len(BAD_INPUTS)], strict=True):
        assert done.returncode == 1 and message in error_line(done), (kind, done.stderr)
        assert not (work / f"never-{kind}.aimodel").exists()
    for done, message in zip(results[len(BAD_INPUTS):], [BAD_INPUTS[3][1], BAD_INPUTS[4][1]], strict=True):
        assert done.returncode == 1 and message in error_line(done), done.stderr
    assert [tree_digest(source) if source.exists() else None for source in sources] == before
    assert leftovers(work) == []


def test_bad_output_paths(work, small_asset, capsys):
    source = tree_digest(small_asset)
    (work / "plain.txt").write_text("a file")
    (work / "plain.aimodel").write_text("a file")
    stranger = work / "someone-elses.aimodel"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    cases = [
        (["-o", small_asset], 2, f"the output is the input ({small_asset}); write to another path"),
        (["-o", small_asset / "inner.aimodel"], 2, "is inside the input"),
        (["-o", work / "out.mlpackage"], 2, "the output must end in .aimodel: "),
        (["-o", work / "nowhere" / "out.aimodel"], 1, "does not exist"),
        (["-o", work / "plain.txt" / "out.aimodel"], 1, "plain.txt is not a folder"),
        (["-o", stranger], 1, "exists and is not a Core AI model asset"),
        (["-o", work / "plain.aimodel"], 1, "it exists and is not an .aimodel directory"),
        (["-o", work / "ok.aimodel", "--report", small_asset / "r.json"], 2, "must not be inside the asset"),
        (["-o", work / "ok.aimodel", "--report", work / "nowhere" / "r.json"], 1, "cannot write report"),
    ]
    for extra, code, message in cases:
        done = run_main(capsys, "sparsify", small_asset, *extra)
        assert done.returncode == code and message in error_line(done), (extra, done.stderr)
    for (extra, code, message), done in zip(cases[:5:4], run_many([["sparsify", small_asset, *extra]
                                                                    for extra, _, _ in cases[:5:4]]), strict=True):
        assert done.returncode == code and message in error_line(done), (extra, done.stderr)
    assert not (work / "nowhere").exists() and not (work / "ok.aimodel").exists()
    assert (stranger / "notes.txt").read_text() == "keep me" and len(list(stranger.iterdir())) == 1
    assert (work / "plain.aimodel").read_text() == "a file"
    assert tree_digest(small_asset) == source and leftovers(work) == [] and leftovers(small_asset) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(work, small_asset):
    folder = work / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        done = run_cli("palettize", small_asset, "-o", folder / "out.aimodel")
        assert done.returncode == 1 and "is not writable" in error_line(done)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


INVALID_OPTIONS = [
    ["palettize", "--n-bits", "5"],
    ["palettize", "--granularity", "per_block"],
    ["palettize", "--lut-dtype", "int4"],
    ["palettize", "--workers", "0"],
    ["palettize", "--group-size", "0"],
    ["palettize", "--cluster-dim", "2", "--per-channel-scale"],
    ["sparsify", "--sparsity", "1.5"],
    ["sparsify", "--n-m", "2-4"],
    ["sparsify", "--n-m", "2:4", "--sparsity", "0.5"],
    ["sparsify", "--quantize", "int8", "--palettize-bits", "4"],
    ["sparsify", "--palettize-bits", "5"],
    ["sparsify", "--block-size", "1"],
    ["sparsify", "--threshold", "-1"],
]


def test_invalid_option_values_show_the_api_message(work, capsys):
    from coreai_opt import _cli_commands, cli

    expected = []
    for args in INVALID_OPTIONS:
        namespace = cli.build_parser().parse_args([args[0], "--example", "-o", "x.aimodel", *args[1:]])
        build = _cli_commands.palettize_kwargs if args[0] == "palettize" else _cli_commands.sparsify_kwargs
        with pytest.raises(_cli_commands.CliError) as error:
            build(namespace)
        assert error.value.code == 2
        expected.append(f"coreai-opt: error: {error.value}")
    assert expected[0] == 'coreai-opt: error: "n_bits" must be one of 1, 2, 3, 4, 6, 8. Got 5.'
    assert expected[7] == ("coreai-opt: error: \"n_m_ratio\" must be a pair (n, m) of integers with m > 0 and "
                           "0 <= n <= m. Got '2-4'.")
    output = work / "never.aimodel"
    for args, message in zip(INVALID_OPTIONS, expected, strict=True):
        done = run_main(capsys, args[0], "--example", "-o", output, *args[1:])
        assert done.returncode == 2 and error_line(done) == message, (args, done.stderr)
    chosen = [0, 7, 9]  # and the same through the real command
    results = run_many([[INVALID_OPTIONS[i][0], "--example", "-o", output, *INVALID_OPTIONS[i][1:]] for i in chosen])
    for i, done in zip(chosen, results, strict=True):
        assert done.returncode == 2 and error_line(done) == expected[i], (INVALID_OPTIONS[i], done.stderr)
    assert not output.exists() and leftovers(work) == []


USAGE_ERRORS = [
    (["palettize", "-o", "x.aimodel"], "missing the input asset"),
    (["palettize", "IN.aimodel", "--example", "-o", "x.aimodel"], "either an input asset or --example, not both"),
    (["sparsify", "--example"], "the following arguments are required: -o/--output"),
    (["palettize", "--example", "-o", "x.aimodel", "--n-bits", "four"], "argument --n-bits: invalid int value"),
    (["inspect", "--bogus"], "unrecognized arguments: --bogus"),
    (["compare", "a.aimodel"], "compare needs two assets: A.aimodel B.aimodel (or --example B.aimodel)"),
    (["compare", "--example"], "with --example give one asset, B.aimodel, to compare with the bundled model (got 0)"),
    (["compare", "--example", "a.aimodel", "b.aimodel"], "with --example give one asset, B.aimodel"),
    ([], "choose a command"),
]


def test_usage_errors(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    for args, message in USAGE_ERRORS:
        done = run_main(capsys, *args)
        assert done.returncode == 2 and message in error_line(done), (args, done.stderr)
    results = run_many([args for args, _ in USAGE_ERRORS[2:4]], cwd=work)
    for (args, message), done in zip(USAGE_ERRORS[2:4], results, strict=True):
        assert done.returncode == 2 and message in error_line(done), (args, done.stderr)


def test_compare_errors(work, small_asset):
    done = run_cli("compare", small_asset, work / "missing.aimodel")
    assert done.returncode == 1 and "candidate not found" in error_line(done)
    done = run_cli("compare", small_asset, example_path())
    assert done.returncode == 1 and "the models take different inputs" in error_line(done)
    done = run_cli("compare", small_asset, small_asset, "--function", "nope")
    assert done.returncode == 1 and "no graph named 'nope'" in error_line(done)
    done = run_cli("compare", small_asset, small_asset, "--inputs", work / "none.npz")
    assert done.returncode == 1 and "inputs file not found" in error_line(done)
