"""Which constants are weights, and on which axes their channels lie."""

from __future__ import annotations

import numpy as np

from coreai_opt.coreai_utils._ir import analyse_role, iter_constants, mlir_module
from helpers.authoring import ca, const, program, weight


def _analyses(prog):
    return {site.shape: analyse_role(site) for site in iter_constants(mlir_module(prog)) if site.size >= 64}


def test_matmul_y_operand_has_output_channels_last():
    prog = program(lambda x: ca.batch_matmul(x, const(weight((64, 48)))), {"x": ((2, 64), np.float32)},
                   ((2, 48), np.float32))
    role = _analyses(prog)[(64, 48)].role
    assert (role.out_axis, role.in_axis, role.kinds) == (1, 0, frozenset({"linear"}))


def test_matmul_x_operand_has_output_channels_second_to_last():
    prog = program(lambda x: ca.batch_matmul(const(weight((48, 64))), x), {"x": ((64, 2), np.float32)},
                   ((48, 2), np.float32))
    role = _analyses(prog)[(48, 64)].role
    assert (role.out_axis, role.in_axis) == (0, 1)


def test_transpose_maps_axes_back_to_the_constant():
    prog = program(lambda x: ca.batch_matmul(x, ca.transpose(const(weight((48, 64))), np.array([1, 0], np.uint32))),
                   {"x": ((2, 64), np.float32)}, ((2, 48), np.float32))
    role = _analyses(prog)[(48, 64)].role
    assert (role.out_axis, role.in_axis) == (0, 1)


def test_rank3_weight_behind_a_transpose():
    perm = np.array([0, 2, 1], np.uint32)
    prog = program(lambda x: ca.batch_matmul(x, ca.transpose(const(weight((1, 48, 64))), perm)),
                   {"x": ((1, 2, 64), np.float32)}, ((1, 2, 48), np.float32))
    role = _analyses(prog)[(1, 48, 64)].role
    assert (role.out_axis, role.in_axis) == (1, 2)


def test_constant_shared_by_two_matmuls_that_agree():
    shared = weight((64, 64))

    def build(x):
        w = const(shared)
        return ca.batch_matmul(ca.batch_matmul(x, w), w)

    analysis = _analyses(program(build, {"x": ((2, 64), np.float32)}, ((2, 64), np.float32)))[(64, 64)]
    assert analysis.role is not None and analysis.conflict is None
    assert analysis.consumers == ("coreai.batch_matmul", "coreai.batch_matmul")


def test_weight_feeding_both_operands_of_matmuls_gets_the_default_axis_and_a_conflict_note():
    shared = weight((64, 64))

    def build(x):
        w = const(shared)
        return ca.batch_matmul(w, ca.batch_matmul(x, w))

    analysis = _analyses(program(build, {"x": ((64, 64), np.float32)}, ((64, 64), np.float32)))[(64, 64)]
    assert analysis.role.out_axis == 0 and analysis.conflict and "disagree" in analysis.conflict


def test_constant_also_read_by_a_non_weight_op_is_not_a_weight():
    shared = weight((2, 64))

    def build(x):
        w = const(weight((64, 64)))
        return ca.add(ca.batch_matmul(x, w), ca.batch_matmul(const(shared), w))

    prog = program(build, {"x": ((2, 64), np.float32)}, ((2, 64), np.float32))
    analyses = _analyses(prog)
    assert analyses[(64, 64)].role is not None

    def mixed(x):
        w = const(weight((64, 64)))
        return ca.add(ca.batch_matmul(x, w), w)

    analysis = _analyses(program(mixed, {"x": ((64, 64), np.float32)}, ((64, 64), np.float32)))[(64, 64)]
    assert analysis.role is None and analysis.non_weight_consumers == ("coreai.add",)


def test_converted_net_roles(small_net_fp32):
    analyses = _analyses(small_net_fp32[0])
    assert analyses[(100, 64)].role.kinds == frozenset({"embedding"})
    assert analyses[(16, 8, 3, 3)].role.kinds == frozenset({"conv"})
    linear = analyses[(48, 64)].role
    assert linear.kinds == frozenset({"linear"}) and (linear.out_axis, linear.in_axis) == (0, 1)


def test_names_come_from_the_torch_call_stack(small_net_fp32):
    names = {site.shape: site.name for site in iter_constants(mlir_module(small_net_fp32[0]))}
    assert names[(48, 64)].endswith("Linear$1") and names[(16, 8, 3, 3)].endswith("Conv2d$1")
