"""Pure formatting of the command line's tables and JSON documents (coreai_opt.report)."""

from __future__ import annotations

import json
import math

import pytest

from coreai_opt import report as fmt
from coreai_opt.coreai_utils import CompressionReport, WeightInfo, WeightReport
from coreai_opt.runtime import OutputComparison


@pytest.mark.parametrize(("count", "text"), [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1234, "1.2 kB"), (999_949, "999.9 kB"),
    (999_950, "1.0 MB"), (1_200_000, "1.2 MB"), (2_741_632, "2.7 MB"), (3_500_000_000, "3.5 GB"),
    (7 * 10**15, "7000.0 TB"),
])
def test_human_bytes(count, text):
    assert fmt.human_bytes(count) == text


def test_shapes_db_ratio_cosine_error():
    assert fmt.format_shape((384, 384)) == "384x384"
    assert fmt.format_shape([16, 8, 3, 3]) == "16x8x3x3"
    assert fmt.format_shape(()) == "scalar"
    assert fmt.format_db(None) == "-"
    assert fmt.format_db(24.0681) == "24.1"
    assert fmt.format_db(math.inf) == "inf"
    assert fmt.format_db(-math.inf) == "-inf"
    assert fmt.format_db("inf") == "inf"
    assert fmt.format_db(math.nan) == "nan"
    assert fmt.format_ratio(2_741_632, 346_048) == "7.92x"
    assert fmt.format_ratio(10, 0) == "inf"
    assert fmt.format_cosine(0.99999912) == "0.999999"
    assert fmt.format_error(0.0) == "0"
    assert fmt.format_error(0.0023712) == "0.00237"
    assert fmt.format_error(math.inf) == "inf"


def test_shorten_keeps_both_ends():
    assert fmt.shorten("short", 10) == "short"
    name = "encoder/layer.11/attention/self/query/weight"
    short = fmt.shorten(name, 20)
    assert len(short) == 20 and short.startswith("encoder/") and short.endswith("weight") and "..." in short


def test_format_table_fixed_width_columns():
    text = fmt.format_table(["name", "size", "note"], [["a", "1 B", "first"], ["long name", "12.3 kB", "x"]], "lrl")
    lines = text.splitlines()
    assert lines[0] == "name          size  note"  # headers aligned like their column
    assert lines[1] == "---------  -------  -----"
    assert lines[2] == "a              1 B  first"
    assert lines[3] == "long name  12.3 kB  x"
    assert all(line == line.rstrip() for line in lines)


def _report() -> CompressionReport:
    return CompressionReport("palettize", {"n_bits": 4, "lut_dtype": None}, [
        WeightReport("conv", "main#1", (32, 3, 3, 3), "f32", ("coreai.conv2d",), "skipped",
                     "864 elements <= weight_num_threshold 1024", 3456, 3456),
        WeightReport("", "main#2", (384, 384), "f32", ("coreai.transpose",), "compressed",
                     "palettized 4-bit, per_tensor, 1 LUT of 16, LUT f32", 589_824, 73_792, snr_db=24.07),
        WeightReport("exact", "main#3", (64, 64), "f32", ("coreai.batch_matmul",), "compressed",
                     "palettized 4-bit", 16_384, 2_112, snr_db=math.inf),
    ], seconds=0.5)


def test_compression_table_rows_and_totals():
    report = _report()
    lines = fmt.compression_table(report).splitlines()
    assert lines[0].split() == ["weight", "shape", "size", "before", "->", "after", "SNR", "dB", "result"]
    assert len(lines) == 2 + 3
    assert "conv" in lines[2] and "32x3x3x3" in lines[2] and "3.5 kB ->  3.5 kB" in lines[2]
    assert lines[2].endswith("skipped: 864 elements <= weight_num_threshold 1024")
    assert lines[3].startswith("main#2 ")  # no name: the id
    assert "384x384" in lines[3] and "589.8 kB -> 73.8 kB" in lines[3] and " 24.1 " in lines[3]
    assert " inf " in lines[4]
    # the "->" of every row lines up
    assert len({line.index("->") for line in lines[2:]}) == 1
    totals = fmt.compression_totals(report, 700_000, 100_000).splitlines()
    assert totals[0] == "weights: 2 compressed, 1 skipped; 609.7 kB -> 79.4 kB (7.68x)"
    assert totals[1] == "asset on disk: 700.0 kB -> 100.0 kB (7.00x)"
    assert len(totals) == 2  # all in this process: no worker line
    report.worker_processes, report.worker_peak_bytes = 2, 473_108_480
    assert fmt.compression_totals(report, 700_000, 100_000).splitlines()[2] == \
        "clustering: 2 worker processes, peak 473.1 MB together"


def test_compression_table_without_weights():
    assert "no weights" in fmt.compression_table(CompressionReport("sparsify", {}, []))


def test_compression_document_is_strict_json():
    report = _report()
    document = fmt.compression_document(report, command="palettize", input_path="/a/in.aimodel",
                                        output_path="/a/out.aimodel", asset_bytes_before=700_000,
                                        asset_bytes_after=100_000, warnings=["w1"])
    text = fmt.to_json(document)
    parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert parsed["command"] == "palettize" and parsed["pass"] == "palettize"
    assert parsed["input"] == "/a/in.aimodel" and parsed["output"] == "/a/out.aimodel"
    assert parsed["asset_bytes_before"] == 700_000 and parsed["asset_bytes_after"] == 100_000
    assert parsed["asset_ratio"] == pytest.approx(7.0)
    assert parsed["compressed"] == 2 and parsed["skipped"] == 1 and parsed["warnings"] == ["w1"]
    assert parsed["bytes_before"] == report.bytes_before and parsed["bytes_after"] == report.bytes_after
    assert parsed["options"] == {"n_bits": 4, "lut_dtype": None}
    assert [w["snr_db"] for w in parsed["weights"]] == [None, 24.07, "inf"]
    assert parsed["weights"][1]["shape"] == [384, 384]
    assert parsed["weights"] == [w.to_dict() for w in report.weights]


def test_jsonable_replaces_non_finite_floats_and_enums():
    from coreai_opt.coreai_utils import DType

    value = fmt.jsonable({"a": [math.inf, -math.inf, 1.5], "b": (math.nan,), "c": DType.INT8, 3: None})
    assert value == {"a": ["inf", "-inf", 1.5], "b": ["nan"], "c": "int8", "3": None}


def _infos() -> list[WeightInfo]:
    return [
        WeightInfo("emb", "main#0", (100, 64), "f32", ("coreai.gather_nd",), "dense", 25_600, 25_600, "f32[100x64]"),
        WeightInfo("lin", "main#1", (48, 64), "f32", ("coreai.transpose", "coreai.transpose"),
                   "palettized 4-bit, 1 LUT of 16, LUT f32", 1_600, 12_288, "lut_to_dense(...)"),
        WeightInfo("conv", "main#2", (16, 8, 3, 3), "f16", ("coreai.conv2d",),
                   "sparse, density 0.500, non-zeros si8", 500, 2_304, "sparse(...)"),
    ]


def test_inspect_table_and_totals():
    lines = fmt.inspect_table(_infos()).splitlines()
    assert lines[0].split() == ["weight", "shape", "dtype", "consumers", "size", "storage"]
    assert lines[2].split()[:4] == ["emb", "100x64", "f32", "gather_nd"] and lines[2].endswith("dense")
    assert "transpose x2" in lines[3] and lines[3].endswith("palettized 4-bit, 1 LUT of 16, LUT f32")
    assert "16x8x3x3" in lines[4] and "f16" in lines[4] and "sparse, density 0.500" in lines[4]
    totals = fmt.inspect_totals(_infos(), 41_000).splitlines()
    assert totals[0] == "weights: 3 (1 dense, 1 palettized, 1 sparse); 27.7 kB stored, 40.2 kB dense (1.45x)"
    assert totals[1] == "asset on disk: 41.0 kB"
    assert "no weights" in fmt.inspect_table([])


def test_inspect_document():
    document = json.loads(fmt.to_json(fmt.inspect_document(_infos(), asset_path="/m.aimodel", asset_bytes=41_000)))
    assert document["asset"] == "/m.aimodel" and document["asset_bytes"] == 41_000
    assert document["weight_count"] == 3 and document["weight_bytes"] == 27_700
    assert document["weight_dense_bytes"] == 40_192
    assert document["weights"] == [w.to_dict() for w in _infos()]


def test_comparison_table_and_document():
    rows = [("logits", (1, 10), OutputComparison(1.0, math.inf, math.inf, 0.0, 0)),
            ("hidden", (2, 5, 48), OutputComparison(0.993016, 18.62, 28.31, 0.259, 3))]
    lines = fmt.comparison_table(rows).splitlines()
    assert lines[0].split() == ["output", "shape", "cosine", "SNR", "dB", "PSNR", "dB", "max", "abs", "err",
                                "non-finite"]
    assert lines[2].split() == ["logits", "1x10", "1.000000", "inf", "inf", "0", "0"]
    assert lines[3].split() == ["hidden", "2x5x48", "0.993016", "18.6", "28.3", "0.259", "3"]
    document = json.loads(fmt.to_json(fmt.comparison_document(
        rows, reference="/a.aimodel", candidate="/b.aimodel", function="main", inputs=None, seed=0)))
    assert document["seed"] == 0 and document["inputs"] is None and document["function"] == "main"
    assert document["outputs"][0] == {"name": "logits", "shape": [1, 10], "cosine": 1.0, "snr_db": "inf",
                                      "psnr_db": "inf", "max_abs_error": 0.0, "non_finite": 0}
    assert document["outputs"][1]["non_finite"] == 3


def test_progress_line_fits_the_width():
    line = fmt.progress_line(3, 6, "Sequential$2/Linear$1", 80)
    assert line.startswith("[") and "3/6" in line and line.endswith("Sequential$2/Linear$1")
    bar = line[1:line.index("]")]
    assert bar.count("#") == bar.count(".") and len(bar) == 26
    assert fmt.progress_line(6, 6, "x", 80).startswith("[" + "#" * 26 + "]")
    assert fmt.progress_line(0, 0, "x", 80).startswith("[" + "#" * 26 + "]")
    for width in (20, 40, 60, 200):
        long = fmt.progress_line(1, 2, "a/very/long/weight/name/" * 10, width)
        assert len(long) < width
