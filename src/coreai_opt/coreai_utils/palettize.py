"""``palettize_weights``: replace weights by n-bit indices into k-means look-up tables."""

from __future__ import annotations

from ._passes.options import PalettizeOptions
from ._passes.palettize import PalettizeEncoder
from ._passes.runner import run_pass
from ._types import CompressionGranularity, DType


def palettize_weights(
    coreai_program,
    lut_dtype: DType | None,
    n_bits: int = 4,
    granularity: CompressionGranularity = CompressionGranularity.PER_TENSOR,
    group_size: int = 32,
    cluster_dim: int = 1,
    enable_per_channel_scale: bool = False,
    weight_num_threshold: int = 1024,
    num_kmeans_workers: int = 4,
    enable_fast_kmeans_mode: bool = True,
    rounding_precision: int = 4,
    in_place: bool = False,
):
    """Palettize the weights of a Core AI ``AIProgram`` with Core AI decompression ops.

    Each float ``coreai.constant`` with more than ``weight_num_threshold``
    elements whose consumers are all weight ops (matmul, conv2d, gather_nd,
    transpose) becomes ``coreai.lut_to_dense`` over ``n_bits`` indices and a
    ``2**n_bits``-entry LUT per tensor, output channel or group of ``group_size``
    output channels, clustered with an optimal 1-D k-means (vector k-means when
    ``cluster_dim > 1``). ``lut_dtype`` quantizes each LUT symmetrically with its
    own scale (``coreai.blockwise_shift_scale``); ``enable_per_channel_scale``
    normalizes output channels first. Weights that cannot be palettized are left
    as they are, with a ``CompressionWarning`` naming them.

    ``num_kmeans_workers`` threads (at most one per available CPU) work on
    different weights, and as many worker processes cluster them when the
    program is large enough to repay starting them; the result is
    bit-identical for any worker count.
    ``enable_fast_kmeans_mode`` rounds weights to ``rounding_precision`` decimals
    (in float64, so nothing overflows) where that lets the clustering start from
    an exact optimum of the rounded values; indices and LUT entries are always
    fitted to the exact weights.

    Returns the palettized program: ``coreai_program`` itself when ``in_place``,
    otherwise a copy (the input is never modified). Raises ``ValueError`` for
    invalid arguments and ``TypeError`` when ``coreai_program`` is not an
    ``AIProgram``, before any work.
    """
    options = PalettizeOptions(
        lut_dtype=lut_dtype,
        n_bits=n_bits,
        granularity=granularity,
        group_size=group_size,
        cluster_dim=cluster_dim,
        enable_per_channel_scale=enable_per_channel_scale,
        weight_num_threshold=weight_num_threshold,
        num_kmeans_workers=num_kmeans_workers,
        enable_fast_kmeans_mode=enable_fast_kmeans_mode,
        rounding_precision=rounding_precision,
    )
    return run_pass(
        coreai_program,
        in_place=in_place,
        pass_name="palettize",
        options=options.to_dict(),
        threshold=options.weight_num_threshold,
        encoder=PalettizeEncoder(options),
        workers=options.num_kmeans_workers,
    )
