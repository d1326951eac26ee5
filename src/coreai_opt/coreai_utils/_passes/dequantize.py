"""The decompression graph that turns quantized codes back into floats.

``blockwise_shift_scale(codes, scale, 0, 0)`` for codes whose zero point is 0
(int8, fp8). For uint8 codes (zero point 128) the runtime evaluates
``scale * code - scale * 128``: that rounds twice, so values near zero come out
off by up to ~1e-5 relative to the step, and with a scale near the float type's
limit ``scale * 255`` overflows and ``inf - inf`` is NaN. So uint8 codes are
centred first with a unit scale, which is exact, and scaled by a second op.
"""

from __future__ import annotations

import numpy as np

from .._dtypes import numpy_dtype
from .._encoding import Const, Node, ShiftScale
from .._kernels.quantize import QuantFormat


def dequantized(codes: np.ndarray, scale: np.ndarray, fmt: QuantFormat, element_type: str) -> Node:
    """Codes of ``fmt`` times ``scale`` (broadcast by blocks), as ``element_type`` floats."""
    dtype = numpy_dtype(element_type)
    shape = scale.shape
    zeros = Const(np.zeros(shape, dtype), element_type)
    data = Const(codes, fmt.element_type)
    zero_point = Const(np.full(shape, fmt.zero_point, fmt.dtype), fmt.element_type)
    if not fmt.zero_point:
        return ShiftScale(data, Const(scale, element_type), zero_point, zeros)
    centred = ShiftScale(data, Const(np.ones(shape, dtype), element_type), zero_point, zeros)
    return ShiftScale(centred, Const(scale, element_type), zeros, zeros)
