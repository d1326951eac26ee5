"""Compress the weights of Core AI programs: palettization and sparsification.

``palettize_weights`` and ``sparsify_weights`` take a ``coreai.authoring.AIProgram``
and return one whose weight constants are replaced by Core AI decompression ops.
"""

from ._passes.report import CompressionReport, WeightReport, collect_reports
from ._passes.runner import CompressionWarning
from ._types import CompressionGranularity, DType
from .inspect import WeightInfo, inspect_weights
from .palettize import palettize_weights
from .sparsify import sparsify_weights

__all__ = [
    "CompressionGranularity",
    "CompressionReport",
    "CompressionWarning",
    "DType",
    "WeightInfo",
    "WeightReport",
    "collect_reports",
    "inspect_weights",
    "palettize_weights",
    "sparsify_weights",
]
