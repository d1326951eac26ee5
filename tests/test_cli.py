"""The ``coreai-opt`` commands, run as ``python -m coreai_opt`` on real assets (errors: test_cli_errors.py)."""

from __future__ import annotations

import json
import os
import pathlib
import pty
import subprocess

import numpy as np
import pytest

from coreai_opt.examples import example_path
from helpers.cli import CLI, asset_bytes, error_line, leftovers, resource_constant_bytes, run_cli, tree_digest


@pytest.fixture(scope="module")
def palettized(work):
    """``palettize --example`` with a JSON report: (process, output, report, example digest before, after)."""
    before = tree_digest(example_path())
    output, report = work / "example-4bit.aimodel", work / "example-4bit.json"
    done = run_cli("palettize", "--example", "-o", output, "--report", report)
    assert done.returncode == 0, done.stderr
    return done, output, json.loads(report.read_text()), before, tree_digest(example_path())


@pytest.fixture(scope="module")
def sparsified(work, small_asset):
    """``sparsify`` of small_net with 2:4 and int8 non-zeros: (process, output, report, digest before, after)."""
    before = tree_digest(small_asset)
    output, report = work / "small-sparse.aimodel", work / "small-sparse.json"
    done = run_cli("sparsify", small_asset, "-o", output, "--n-m", "2:4", "--quantize", "int8",
                   "--threshold", "1000", "--report", report)
    assert done.returncode == 0, done.stderr
    return done, output, json.loads(report.read_text()), before, tree_digest(small_asset)


# --- help ------------------------------------------------------------------------------------

def test_help():
    done = run_cli("--help")
    assert done.returncode == 0
    for word in ("palettize", "sparsify", "inspect", "compare", "exit codes:", "examples:"):
        assert word in done.stdout
    for command, options in [("palettize", ["--n-bits", "--granularity", "--group-size", "--lut-dtype",
                                            "--cluster-dim", "--per-channel-scale", "--threshold", "--workers",
                                            "--exact", "--rounding-precision", "--quiet", "--report", "--example"]),
                             ("sparsify", ["--sparsity", "--n-m", "--block-size", "--quantize", "--palettize-bits",
                                           "--threshold", "--quiet", "--report", "--example"]),
                             ("inspect", ["--json", "--example"]),
                             ("compare", ["--inputs", "--seed", "--function", "--json", "--example"])]:
        done = run_cli(command, "--help")
        assert done.returncode == 0, done.stderr
        assert f"usage: coreai-opt {command}" in done.stdout
        assert "examples:" in done.stdout and "exit codes:" in done.stdout and f"coreai-opt {command} " in done.stdout
        for option in options:
            assert option in done.stdout, (command, option)


# --- palettize / sparsify --------------------------------------------------------------------

def test_palettize_example_table(palettized):
    done, output, report, _, _ = palettized
    lines = done.stdout.splitlines()
    assert lines[0].startswith("palettize: ") and lines[0].endswith(f"-> {output}")
    assert lines[1].split()[:2] == ["weight", "shape"] and "SNR dB" in lines[1] and "result" in lines[1]
    rows = {line.split()[0]: line for line in lines[3:9]}
    assert set(rows) == {w["name"] for w in report["weights"]}
    assert "skipped: 864 elements <= weight_num_threshold 1024" in rows["Sequential$1/Conv2d$1"]
    linear = rows["Sequential$2/Linear$1"]
    assert "256x2048" in linear and "2.1 MB -> 262.2 kB" in linear and "palettized 4-bit" in linear
    assert float(linear.split()[7]) == pytest.approx(24.1, abs=1.0)  # SNR dB
    assert lines[10] == "weights: 5 compressed, 1 skipped; 2.7 MB -> 346.0 kB (7.92x)"
    assert lines[11].startswith("asset on disk: 2.8 MB -> ") and lines[11].endswith("x)")
    assert done.stderr == ""  # not a terminal: no progress bar


def test_palettize_report_json_adds_up(palettized):
    _, output, report, _, _ = palettized
    source = example_path()
    assert report["command"] == report["pass"] == "palettize"
    assert pathlib.Path(report["output"]) == output.absolute()
    assert pathlib.Path(report["input"]) == source
    assert report["options"]["n_bits"] == 4 and report["options"]["enable_fast_kmeans_mode"] is True
    weights = report["weights"]
    assert len(weights) == 6 and report["compressed"] == 5 and report["skipped"] == 1
    for weight in weights:
        assert set(weight) >= {"name", "id", "shape", "element_type", "consumers", "status", "detail",
                               "bytes_before", "bytes_after", "snr_db"}
        if weight["status"] == "compressed":
            assert weight["bytes_after"] < weight["bytes_before"] / 7 and 20 < weight["snr_db"] < 30
        else:
            assert weight["bytes_after"] == weight["bytes_before"] and weight["snr_db"] is None
    assert report["bytes_after"] == sum(w["bytes_after"] for w in weights)
    assert report["asset_bytes_before"] == asset_bytes(source)
    assert report["asset_bytes_after"] == asset_bytes(output)
    # weights + the constants the pass left alone = the asset, up to bytecode and metadata overhead
    ids = {w["id"] for w in weights}
    others = sum(size for id_, size in resource_constant_bytes(source).items() if id_ not in ids)
    for key, size in (("bytes_before", report["asset_bytes_before"]), ("bytes_after", report["asset_bytes_after"])):
        expected = sum(w[key] for w in weights) + others
        assert abs(size - expected) <= 8192 + 0.02 * size, (key, size, expected)


def test_compression_leaves_the_input_untouched(palettized, sparsified, work):
    assert palettized[3] == palettized[4]
    assert sparsified[3] == sparsified[4]
    assert leftovers(work) == []


def test_sparsify_table_and_report(sparsified):
    done, output, report, _, _ = sparsified
    assert report["pass"] == "sparsify" and report["options"]["n_m_ratio"] == [2, 4]
    assert report["options"]["target_sparsity"] is None and report["options"]["quantize_dtype"] == "int8"
    assert report["compressed"] == 2 and report["skipped"] == 1
    embedding, linear, conv = report["weights"]
    assert embedding["status"] == "skipped" and embedding["warning"] is True
    assert "n:m sparsity apply to linear and conv weights only" in embedding["detail"]
    assert len(report["warnings"]) == 1 and "skipped weight 'Embedding$1'" in report["warnings"][0]
    assert done.stderr == f"coreai-opt: warning: {report['warnings'][0]}\n"
    for weight in (linear, conv):
        assert weight["detail"].startswith("2:4 along axis 1: ") and "non-zeros int8" in weight["detail"]
        assert 3 < weight["snr_db"] < 15 and weight["bytes_after"] < weight["bytes_before"] / 5
    for weight in report["weights"]:
        assert weight["detail"] in done.stdout and weight["name"] in done.stdout
    assert "weights: 2 compressed, 1 skipped; 42.5 kB -> 28.5 kB (1.49x)" in done.stdout
    assert "asset on disk: " in done.stdout
    assert report["asset_bytes_after"] == asset_bytes(output)


def test_sparsify_example_with_quiet(work):
    output = work / "example-sparse.aimodel"
    done = run_cli("sparsify", "--example", "-o", output, "--sparsity", "0.75", "--quiet")
    assert done.returncode == 0 and done.stderr == ""
    assert "weights: 5 compressed, 1 skipped;" in done.stdout and "75.0%" in done.stdout
    assert (output / "main.mlirb").is_file()


def test_progress_bar_on_a_terminal(work):
    def stderr_of(*args) -> bytes:
        master, slave = pty.openpty()
        try:
            done = subprocess.run([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=slave, timeout=300)
        finally:
            os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert done.returncode == 0
        return b"".join(chunks)

    shown = stderr_of("palettize", "--example", "-o", work / "tty.aimodel", "--threshold", "70000")
    assert shown.startswith(b"\r[") and b"1/2  Sequential$1/Conv2d$3" in shown
    assert b"]  2/2  Sequential$2/Linear$1" in shown and shown.endswith(b"\r")  # erased at the end
    assert stderr_of("palettize", "--example", "-o", work / "tty.aimodel", "--threshold", "70000", "--quiet") == b""


def test_replaces_an_existing_output_only_after_success(work, small_asset):
    output = work / "replaced.aimodel"
    assert run_cli("palettize", small_asset, "-o", output, "--n-bits", "2", "--quiet").returncode == 0
    first = tree_digest(output)
    done = run_cli("palettize", small_asset, "-o", output, "--n-bits", "7")  # refused: output kept
    assert done.returncode == 2 and tree_digest(output) == first
    done = run_cli("palettize", small_asset, "-o", output, "--n-bits", "8", "--quiet")
    assert done.returncode == 0 and tree_digest(output)["main.mlirb"] != first["main.mlirb"]
    assert leftovers(work) == []


def test_failed_save_leaves_nothing_behind(work, small_asset, monkeypatch, capsys):
    """A failure while saving (in-process, with save_asset broken after writing files) leaves the
    existing output and the folder as they were."""
    from coreai.authoring import AIProgram

    from coreai_opt import cli

    folder = work / "atomic"
    folder.mkdir()
    output = folder / "out.aimodel"
    assert cli.main(["palettize", str(small_asset), "-o", str(output), "--quiet"]) == 0
    capsys.readouterr()
    kept, source = tree_digest(output), tree_digest(small_asset)
    original = AIProgram.save_asset

    def broken(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)
        (path / "main.mlirb").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(AIProgram, "save_asset", broken)
    assert cli.main(["palettize", str(small_asset), "-o", str(output), "--n-bits", "2",
                     "--report", str(folder / "r.json")]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"coreai-opt: error: could not save {output}: disk full\n"
    assert tree_digest(output) == kept and tree_digest(small_asset) == source
    assert sorted(p.name for p in folder.iterdir()) == ["out.aimodel"]


# --- inspect ---------------------------------------------------------------------------------

def test_inspect_uncompressed(small_asset):
    done = run_cli("inspect", small_asset)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == ["weight", "shape", "dtype", "consumers", "size", "storage"]
    rows = lines[3:6]
    assert [row.split()[1] for row in rows] == ["100x64", "48x64", "16x8x3x3"]
    assert all(row.split()[2] == "f32" and row.endswith("dense") for row in rows)
    assert "gather_nd" in rows[0] and "conv2d" in rows[2]
    assert lines[7].startswith("weights: 3 (3 dense); 42.5 kB stored, 42.5 kB dense")
    assert lines[8].startswith("asset on disk: ") and lines[8].endswith(" kB")
    document = json.loads(run_cli("inspect", small_asset, "--json").stdout)
    assert document["weight_count"] == 3 and document["asset_bytes"] == asset_bytes(small_asset)
    assert [w["storage"] for w in document["weights"]] == ["dense"] * 3
    assert [w["bytes"] for w in document["weights"]] == [25600, 12288, 4608]


def test_inspect_compressed(palettized, sparsified):
    done = run_cli("inspect", palettized[1])
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("Sequential$")]
    assert len(rows) == 6
    assert rows[0].endswith("dense")
    assert all("palettized 4-bit, 1 LUT of 16" in row for row in rows[1:])
    assert "(1 dense, 5 palettized)" in done.stdout
    document = json.loads(run_cli("inspect", sparsified[1], "--json").stdout)
    assert [w["storage"].split(",")[0] for w in document["weights"]] == ["dense", "sparse", "sparse"]
    assert all("density 0.500" in w["storage"] and w["bytes"] < w["dense_bytes"] for w in document["weights"][1:])
    done = run_cli("inspect", sparsified[1])
    assert "sparse, density 0.500, non-zeros si8" in done.stdout and "(1 dense, 2 sparse)" in done.stdout


# --- compare ---------------------------------------------------------------------------------

def test_compare_with_itself_and_with_the_palettized_model(palettized):
    source = example_path()
    same = json.loads(run_cli("compare", source, source, "--json").stdout)
    assert same["seed"] == 0 and same["function"] == "main" and same["inputs"] is None
    (output,) = same["outputs"]
    assert output["shape"] == [1, 10] and output["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert output["max_abs_error"] == 0 and output["snr_db"] == "inf" and output["non_finite"] == 0
    done = run_cli("compare", source, palettized[1], "--seed", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "random inputs (seed 3)" in lines[0]
    assert lines[1].split()[:3] == ["output", "shape", "cosine"]
    name, shape, cosine, snr, psnr, max_error, non_finite = lines[3].split()
    assert shape == "1x10" and 0.99 < float(cosine) < 1.0 and non_finite == "0"
    assert 15 < float(snr) < 60 and float(psnr) > float(snr) and 0 < float(max_error) < 0.1


def test_compare_against_the_bundled_example(palettized):
    done = run_cli("compare", "--example", palettized[1], "--seed", "3", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert pathlib.Path(document["reference"]) == example_path()
    assert pathlib.Path(document["candidate"]) == palettized[1].absolute()
    explicit = json.loads(run_cli("compare", example_path(), palettized[1], "--seed", "3", "--json").stdout)
    assert document["outputs"] == explicit["outputs"] and 0.99 < document["outputs"][0]["cosine"] < 1.0


def test_compare_with_an_inputs_file(work, small_asset, sparsified, small_net_fp32):
    inputs = work / "inputs.npz"
    np.savez(inputs, **{name: value.astype(np.int64) if name == "ids" else value
                        for name, value in small_net_fp32[2].items()})
    document = json.loads(run_cli("compare", small_asset, sparsified[1], "--inputs", inputs, "--json").stdout)
    assert pathlib.Path(document["inputs"]) == inputs and document["seed"] is None
    assert sorted(o["shape"] for o in document["outputs"]) == [[1, 16, 6, 6], [2, 5, 48]]
    for output in document["outputs"]:
        assert 0.8 < output["cosine"] < 1.0 and output["non_finite"] == 0 and output["max_abs_error"] > 0
    bad = work / "bad-inputs.npz"
    np.savez(bad, img=small_net_fp32[2]["img"])
    done = run_cli("compare", small_asset, small_asset, "--inputs", bad)
    assert done.returncode == 1
    assert "lacks ids; the model takes ids (2x5 int32), img (1x8x8x8 float32)" in error_line(done)
