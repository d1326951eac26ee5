"""``sparsify_weights``: prune weights and store their non-zeros with a bitmask."""

from __future__ import annotations

from ._passes.options import SparsifyOptions
from ._passes.runner import available_cpus, run_pass
from ._passes.sparsify import SparsifyEncoder
from ._types import DType


def sparsify_weights(
    coreai_program,
    target_sparsity: float | None = 0.5,
    block_size: int | None = None,
    n_m_ratio: tuple[int, int] | None = None,
    quantize_dtype: DType | None = None,
    palettize_nbits: int | None = None,
    weight_num_threshold: int = 1024,
    in_place: bool = False,
):
    """Sparsify the weights of a Core AI ``AIProgram`` with Core AI decompression ops.

    Each float ``coreai.constant`` with more than ``weight_num_threshold``
    elements whose consumers are all weight ops is pruned and stored as its
    non-zero values plus a ``ui1`` bitmask (``coreai.build_sparse_with_bitmask``
    then ``coreai.sparse_with_bitmask_to_dense``):

    - ``target_sparsity``: exactly ``floor(size * target_sparsity)`` lowest-magnitude
      elements become zero (ties: lower flat index first);
    - ``block_size``: with ``target_sparsity``, whole blocks of ``block_size``
      consecutive output channels are pruned by L2 norm (linear and conv only);
    - ``n_m_ratio=(n, m)``: the ``n`` smallest of every ``m`` consecutive elements
      along the input channel axis become zero (linear and conv only).

    ``quantize_dtype`` stores the non-zeros quantized symmetrically (dequantized by
    ``coreai.blockwise_shift_scale``); ``palettize_nbits`` palettizes them with the
    optimal 1-D k-means (``coreai.lut_to_dense``). Weights that cannot be sparsified
    are left as they are, with a ``CompressionWarning`` naming them. Weights are
    encoded on one thread per available CPU (one weight per task, so the output
    never depends on it).

    Returns the sparsified program: ``coreai_program`` itself when ``in_place``,
    otherwise a copy. Raises ``ValueError`` for invalid arguments and ``TypeError``
    when ``coreai_program`` is not an ``AIProgram``, before any work.
    """
    options = SparsifyOptions(
        target_sparsity=target_sparsity,
        block_size=block_size,
        n_m_ratio=n_m_ratio,
        quantize_dtype=quantize_dtype,
        palettize_nbits=palettize_nbits,
        weight_num_threshold=weight_num_threshold,
    )
    return run_pass(
        coreai_program,
        in_place=in_place,
        pass_name="sparsify",
        options=options.to_dict(),
        threshold=options.weight_num_threshold,
        encoder=SparsifyEncoder(options),
        workers=available_cpus(),
    )
