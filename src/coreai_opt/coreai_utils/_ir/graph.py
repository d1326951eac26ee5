"""Find the constants of a Core AI program and what their consumers make of them.

A constant is a weight candidate when every direct consumer is one of
``WEIGHT_OPS``. Its output-channel and input-channel axes follow from how the
consumers use it (see ``DESIGN.md``): the ``y`` operand of a matmul has its
output channels last, the ``x`` operand second to last; a ``coreai.transpose``
maps the axes its own consumers see back through its permutation; embedding
tables (``gather_nd``) and convolution weights have output channels on axis 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from coreai._compiler import ir

from .constants import element_type_name

MATMUL_OPS = frozenset({"coreai.batch_matmul", "coreai.decomposable.broadcasting_batch_matmul"})
CONV_OPS = frozenset({"coreai.conv2d"})
EMBEDDING_OPS = frozenset({"coreai.gather_nd"})
TRANSPOSE_OPS = frozenset({"coreai.transpose"})
#: Consumers that make a constant a compression candidate (the spec's list).
WEIGHT_OPS = MATMUL_OPS | CONV_OPS | EMBEDDING_OPS | TRANSPOSE_OPS

_CALL_STACK = re.compile(r'"call_stack": \[([^\]]*)\]')


@dataclass(frozen=True)
class Role:
    """How consumers use a weight: its kinds and channel axes."""

    kinds: frozenset[str]  # subset of {"linear", "conv", "embedding", "other"}
    out_axis: int
    in_axis: int | None


@dataclass
class ConstantSite:
    """One ``coreai.constant`` op and what is known about it."""

    op: ir.Operation
    graph: str
    ordinal: int
    name: str
    shape: tuple[int, ...]
    element_type: str
    is_resource: bool

    @property
    def id(self) -> str:
        """A short identifier, unique in the program: ``graph#ordinal``."""
        return f"{self.graph}#{self.ordinal}"

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def value(self) -> ir.Value:
        """The SSA value the constant defines."""
        return self.op.results[0]


@dataclass(frozen=True)
class RoleAnalysis:
    """The result of looking at a constant's consumers."""

    role: Role | None  # None: not a weight (some consumer is not a weight op)
    consumers: tuple[str, ...]  # op names of direct consumers, in use order
    non_weight_consumers: tuple[str, ...]
    conflict: str | None  # set when consumers disagree on the channel axes


def _graph_name(op: ir.Operation) -> str | None:
    if op.name != "coreai.graph":
        return None
    return ir.StringAttr(op.attributes["sym_name"]).value


def display_name(op: ir.Operation, graph: str, ordinal: int) -> str:
    """A readable name from the call stack in the op's location, else ``graph/const<ordinal>``."""
    match = _CALL_STACK.search(str(op.location))
    if not match:
        return f"{graph}/const{ordinal}"
    frames = [frame.strip().strip('"') for frame in match.group(1).split(",") if frame.strip()]
    if len(frames) > 1:
        frames = frames[:-1]  # the outermost frame is the exported wrapper module
    path = "/".join(reversed(frames))
    return path if graph == "main" else f"{graph}/{path}"


def _unique_names(sites: list[ConstantSite]) -> None:
    """Make display names unique: within a name, the largest constant keeps it, others get ``#2``, ``#3``...

    A layer's bias and shape constants share its call stack; the weight is the one people look for.
    """
    by_name: dict[str, list[ConstantSite]] = {}
    for site in sites:
        by_name.setdefault(site.name, []).append(site)
    for name, group in by_name.items():
        for position, site in enumerate(sorted(group, key=lambda s: (-s.size, s.ordinal))):
            if position:
                site.name = f"{name}#{position + 1}"


def iter_constants(module: ir.Module) -> list[ConstantSite]:
    """Every ``coreai.constant`` with a static ranked tensor type, graph by graph, in program order."""
    sites: list[ConstantSite] = []

    def visit(block: ir.Block, graph: str, counter: list[int]) -> None:
        for op in block.operations:
            name = _graph_name(op.operation)
            if name is not None:
                visit_regions(op.operation, name, [0])
                continue
            if op.name != "coreai.constant":
                visit_regions(op.operation, graph, counter)
                continue
            ordinal = counter[0]
            counter[0] += 1
            result_type = op.results[0].type
            if not ir.RankedTensorType.isinstance(result_type) or not ir.RankedTensorType(result_type).has_static_shape:
                continue
            sites.append(ConstantSite(
                op=op.operation, graph=graph, ordinal=ordinal, name=display_name(op.operation, graph, ordinal),
                shape=tuple(ir.RankedTensorType(result_type).shape), element_type=element_type_name(result_type),
                is_resource=ir.DenseResourceElementsAttr.isinstance(op.attributes["value"]),
            ))

    def visit_regions(op: ir.Operation, graph: str, counter: list[int]) -> None:
        for region in op.regions:
            for block in region.blocks:
                visit(block, graph, counter)

    visit(module.body, "module", [0])
    _unique_names(sites)
    return sites


def _permutation(transpose: ir.Operation) -> list[int] | None:
    perm_op = transpose.operands[1].owner
    if isinstance(perm_op, ir.Block) or perm_op.name != "coreai.constant":
        return None
    attr = perm_op.attributes["value"]
    if not ir.DenseElementsAttr.isinstance(attr):
        return None
    dense = ir.DenseElementsAttr(attr)
    rank = ir.RankedTensorType(transpose.operands[0].type).rank
    if dense.is_splat:
        return None
    return [int(v) for v in np.array(dense).reshape(-1)][:rank]


def _direct_role(op_name: str, operand: int, rank: int) -> Role | None:
    """The role one direct (non-transpose) consumer gives a value, or None if not a weight use."""
    if op_name in MATMUL_OPS and operand in (0, 1) and rank >= 2:
        if operand == 1:
            return Role(frozenset({"linear"}), rank - 1, rank - 2)
        return Role(frozenset({"linear"}), rank - 2, rank - 1)
    if op_name in CONV_OPS and operand == 1:
        return Role(frozenset({"conv"}), 0, 1 if rank > 1 else None)
    if op_name in EMBEDDING_OPS and operand == 0:
        return Role(frozenset({"embedding"}), 0, 1 if rank > 1 else None)
    return None


def default_role(rank: int, kinds: frozenset[str] = frozenset({"other"})) -> Role:
    """Output channels on axis 0, input channels on axis 1 (when there is one)."""
    return Role(kinds, 0, 1 if rank > 1 else None)


def _downstream_roles(value: ir.Value, rank: int, depth: int = 0) -> list[Role]:
    """Roles given by the weight ops consuming ``value``, looking through transposes."""
    roles: list[Role] = []
    for use in value.uses:
        owner = use.owner
        name = owner.name
        if name in TRANSPOSE_OPS and use.operand_number == 0 and depth < 8:
            perm = _permutation(owner.operation)
            inner = _downstream_roles(owner.results[0], rank, depth + 1)
            if perm is None or len(perm) != rank:
                roles.extend(default_role(rank, r.kinds) for r in inner)
                continue
            for role in inner:
                in_axis = perm[role.in_axis] if role.in_axis is not None else None
                roles.append(Role(role.kinds, perm[role.out_axis], in_axis))
            continue
        role = _direct_role(name, use.operand_number, rank)
        if role is not None:
            roles.append(role)
    return roles


def analyse_role(site: ConstantSite) -> RoleAnalysis:
    """Classify a constant by its consumers (see module docstring)."""
    rank = len(site.shape)
    consumers: list[str] = []
    non_weight: list[str] = []
    for use in site.value.uses:
        name = use.owner.name
        consumers.append(name)
        direct = name in TRANSPOSE_OPS and use.operand_number == 0
        if not direct and _direct_role(name, use.operand_number, rank) is None:
            non_weight.append(name)
    if not consumers or non_weight or rank == 0:
        return RoleAnalysis(None, tuple(consumers), tuple(non_weight), None)
    roles = _downstream_roles(site.value, rank)
    if not roles:
        return RoleAnalysis(default_role(rank), tuple(consumers), (), None)
    kinds = frozenset().union(*(r.kinds for r in roles))
    axes = {(r.out_axis, r.in_axis) for r in roles}
    if len(axes) > 1:
        described = ", ".join(f"out={o}/in={i}" for o, i in sorted(axes, key=str))
        conflict = f"consumers disagree on the channel axes ({described}); using out=0"
        return RoleAnalysis(default_role(rank, kinds), tuple(consumers), (), conflict)
    out_axis, in_axis = axes.pop()
    return RoleAnalysis(Role(kinds, out_axis, in_axis), tuple(consumers), (), None)
