"""The editor builds replacements next to constants and commits or rolls them back."""

from __future__ import annotations

import numpy as np
import pytest

from coreai_opt.coreai_utils._encoding import Const, LutToDense
from coreai_opt.coreai_utils._ir import ProgramEditor, iter_constants, mlir_module
from helpers.authoring import ca, const, program, weight


def _program():
    return program(lambda x: ca.batch_matmul(x, const(weight((64, 48)))), {"x": ((2, 64), np.float32)},
                   ((2, 48), np.float32))


def _palettized(shape):
    indices = np.random.default_rng(0).integers(0, 4, shape).astype(np.uint8)
    lut = np.array([-1.0, -0.5, 0.5, 1.0], np.float32).reshape(1, 1, 4, 1)
    return LutToDense(Const(indices, "ui2"), Const(lut, "f32"), 0)


def _editor_and_weight():
    prog = _program()
    module = mlir_module(prog)
    site = next(s for s in iter_constants(module) if s.shape == (64, 48))
    return prog, module, ProgramEditor(module), site


def test_rollback_leaves_the_program_exactly_as_it_was():
    prog, _, editor, site = _editor_and_weight()
    before = str(prog)
    editor.insert(site.op, _palettized((64, 48)))
    assert "coreai.lut_to_dense" in str(prog)
    editor.rollback()
    assert str(prog) == before


def test_commit_swaps_the_constant_for_the_chain():
    prog, module, editor, site = _editor_and_weight()
    editor.insert(site.op, _palettized((64, 48)))
    editor.commit()
    text = str(prog)
    assert "coreai.lut_to_dense" in text and "tensor<64x48xf32>" in text
    module.operation.verify()


def test_a_chain_of_the_wrong_type_is_refused_and_can_be_rolled_back():
    prog, _, editor, site = _editor_and_weight()
    before = str(prog)
    with pytest.raises(TypeError, match="replacement has type"):
        editor.insert(site.op, _palettized((48, 64)))
    editor.rollback()
    assert str(prog) == before
