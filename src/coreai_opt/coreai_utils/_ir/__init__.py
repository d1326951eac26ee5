"""The only code that touches the Core AI bindings: read constants, analyse consumers, emit ops."""

from __future__ import annotations

import copy

from coreai._compiler import ir
from coreai.authoring import AIProgram

from .constants import BlobReader, constant_loader, read_constant, resource_blobs
from .emit import ProgramEditor
from .graph import WEIGHT_OPS, ConstantSite, Role, RoleAnalysis, analyse_role, iter_constants

__all__ = [
    "WEIGHT_OPS",
    "AIProgram",
    "BlobReader",
    "ConstantSite",
    "ProgramEditor",
    "Role",
    "RoleAnalysis",
    "analyse_role",
    "check_bytecode",
    "clone_program",
    "constant_loader",
    "iter_constants",
    "mlir_module",
    "read_constant",
    "resource_blobs",
]


def mlir_module(program: AIProgram) -> ir.Module:
    """The MLIR module an ``AIProgram`` wraps."""
    return program._module._mlir_module  # noqa: SLF001 - the adapter is the one place allowed to


def check_bytecode(data: bytes) -> None:
    """Parse MLIR bytecode in a context of its own; raise (rather than abort the process) if it is invalid."""
    from coreai.authoring.context import Context

    module = ir.Module.parse(data, context=Context()._mlir_context)  # noqa: SLF001
    del module


def clone_program(program: AIProgram) -> AIProgram:
    """An independent copy of ``program`` (weights are shared, copy-on-write by construction)."""
    return copy.deepcopy(program)
