"""A tensor as a linear form of one source tensor, before its numbers are known; and a region to fold.

A :class:`Form` records how a tensor is computed from its ``source`` X (``L(X; W, b)``, ``L`` a
Conv, ConvTranspose or dense product): the operator that computes it, its operands' forms, the
geometry of the one operator that would replace them all, and what the fold needs to judge it
(cost, branches, the axis its channels lie on).  :mod:`.regions` grows them, :mod:`.evaluate`
turns one into numbers.  A form that nothing swallowed and that has a leaf is a :class:`Region`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .algebra import Geometry
from .linear_ops import ChannelAffine, Passthrough


@dataclass(frozen=True)
class Form:
    """A tensor written as ``L(source; W, b)``, without the numbers."""

    output: str  # the tensor this form computes (== source for the identity)
    source: str
    geometry: Geometry
    op: object | None  # a leaf or linear_ops description; None: the identity of ``source``
    node: int | None  # index of the node computing ``output`` (None for the identity)
    # What it is computed from; for a leaf, the per-channel affines of its input it took over,
    # nearest first.
    operands: tuple[Form, ...]
    cost: int  # multiply-accumulates per output position of the original nodes
    leaves: frozenset  # distinct branches: leaf and pool node indices, ("identity", tensor) terms
    has_leaf: bool  # a Conv, ConvTranspose, Gemm or MatMul is among its nodes
    axis: int | None  # the axis its channels lie on (None: one value per channel for every axis so far)
    rank: int | None  # rank of the tensor it computes
    has_bias: bool  # whether the folded operator may need a bias
    pad_nodes: tuple[int, ...] = ()  # zero Pads a Conv leaf took over as its own padding
    # When set, the form's node is kept and its first input re-pointed at this tensor: an operator that
    # commutes with what it read (a layout change of a per-channel affine) moves in front of it.
    rewire: str | None = None

    @property
    def branches(self) -> int:
        return len(self.leaves)

    @property
    def channel_axis(self) -> int | None:
        """The axis the form's channels lie on: its kind's, or the one its constants picked."""
        kind = self.geometry.kind
        return kind.channel_axis(self.rank) if kind is not None else self.axis

    @property
    def emitted_nodes(self) -> int:
        """How many nodes the folded region becomes (a dense form with a bias on a non-2-D input: two)."""
        kind = self.geometry.kind
        return kind.emitted_nodes(self.rank, self.has_bias) if kind is not None else 1


@dataclass(frozen=True)
class Region:
    """A form to fold: its root tensor, every node that computes it, and the nodes it keeps re-pointed."""

    form: Form
    nodes: tuple[int, ...]  # ascending, the root's node included
    rewires: tuple[tuple[int, str], ...] = ()  # (node, its new first input) for the nodes the region keeps

    @property
    def root_node(self) -> int:
        return self.form.node


def region_nodes(form: Form) -> tuple[int, ...]:
    """Every node that computes ``form`` and goes with its region, ascending (not the nodes it keeps re-pointed)."""
    nodes: set[int] = set()
    for f in subforms(form):
        if f.node is not None and f.rewire is None:
            nodes.add(f.node)
            nodes.update(f.pad_nodes)
    return tuple(sorted(nodes))


def region_rewires(form: Form) -> tuple[tuple[int, str], ...]:
    """The nodes the region of ``form`` keeps, each with the tensor its first input becomes."""
    return tuple(sorted((f.node, f.rewire) for f in subforms(form) if f.rewire is not None))


def subforms(form: Form) -> list[Form]:
    """``form`` and every form it is computed from, each once."""
    seen: dict[int, Form] = {}
    stack = [form]
    while stack:
        f = stack.pop()
        if id(f) not in seen:
            seen[id(f)] = f
            stack.extend(f.operands)
    return list(seen.values())


def without_trailing_batch_norm(form: Form) -> Form | None:
    """The region ``form`` with every BatchNormalization at its end left out (``--keep-post-bn``).

    Walks the chain of single-operand steps that ends the region; if a BatchNormalization is among
    them, the region ends just before the first (innermost) one.  Only branches, and what lies
    inside them, merge: a run on the result finds a Conv followed by the kept BatchNorm, which it
    keeps again, so partial fusion is idempotent like the full one.
    """
    chain = [form]
    while isinstance(chain[-1].op, (ChannelAffine, Passthrough)):
        chain.append(chain[-1].operands[0])
    innermost_bn = None
    for f in chain:
        if isinstance(f.op, ChannelAffine) and any(s.is_batch_norm for s in f.op.steps):
            innermost_bn = f
    if innermost_bn is None:
        return form
    root = innermost_bn.operands[0]
    return root if root.node is not None else None
