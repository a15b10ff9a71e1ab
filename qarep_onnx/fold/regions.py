"""Grow linear regions over one graph and decide which of them to fold.

One pass in topological order gives every tensor that is an affine function of a single tensor X
a symbolic :class:`~.forms.Form` (``L(X; W, b)`` without numbers): leaves start forms, and the
operators of the op table extend them (per-channel affines, sums of forms over the same X,
pass-throughs, pools).  Each description read from a node grows its form by calling back the
finder method of its role (``grow``), so the finder never asks what operator it has.

A leaf also takes over what feeds it, when nothing else reads that: a per-channel affine of its
input (``L(t*X + s)``, exact where no padding reads the zero that ``s`` would have filled) and,
for a Conv, a zero Pad (which becomes its own padding).  A form may swallow an operand's form only
when that operand has no other reader and is not a graph output, so regions never overlap and
never hide a tensor someone needs.  A form's channels lie on one axis (its kind's, or the one its
constants picked); a constant or a BatchNormalization acting on another axis stops it.

A form that nobody swallowed is a region root.  Roots with a leaf that take more nodes than the
ones they would become are folded.  Whenever a block cannot be merged (branches that disagree, a
Cast between a branch and its sum, a weight that is a graph input, ...) :mod:`.refusals` records
why, in words.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..errors import Code, Reason, Refused
from ..graph.attributes import malformed, node_label
from ..graph.index import GraphIndex
from ..graph.tensors import type_name
from .algebra import Geometry, diagonal_geometry
from .evaluate import evaluate
from .forms import (
    Form,
    Region,
    region_nodes,
    region_rewires,
    subforms,
    without_trailing_batch_norm,
)
from .kinds import merge_geometry
from .kinds.base import LeafOp
from .linear_ops import (
    AveragePool,
    ChannelAffine,
    Passthrough,
    Sum,
    ZeroPad,
    constant_axis,
    dim,
)
from .ops import describe, rule
from .refusals import Refusals

# A merged weight may be this many times the weights it replaces, or this many values whatever they were.
_GROWTH = 4
_SMALL_WEIGHT = 1 << 20


class RegionFinder:
    """Finds the regions of one graph; see the module docstring."""

    def __init__(self, index: GraphIndex, keep_post_bn: bool = False, graph_name: str = "") -> None:
        self.index = index
        self.keep_post_bn = keep_post_bn
        self.forms: dict[str, Form] = {}
        self.absorbed: set[str] = set()
        self._described: dict[int, object] = {}
        self._pad_blockers: dict[int, str] = {}  # Pad nodes a Conv could not take over, and why
        self.refusals = Refusals(index, graph_name, self.forms, self.described, self._pad_blockers)

    def described(self, i: int) -> object:
        """Node ``i`` read by the op table (a leaf, a linear_ops description, or a Reason), read once."""
        if i not in self._described:
            self._described[i] = describe(self.index.nodes[i], self.index)
        return self._described[i]

    # -- the pass ----------------------------------------------------------------------------

    def find(self) -> tuple[list[Region], list[Reason]]:
        for i, node in enumerate(self.index.nodes):
            if not node.output or not node.output[0] or node.output[0] in self.index.constants:
                continue  # nothing to compute, or a constant (Constant, Identity of a constant)
            op = self.described(i)
            if isinstance(op, Reason):
                self.refusals.stop(i, op)
                if rule(node.op_type).reports_unfoldable:
                    self.refusals.unfoldable_leaf(i, op)
                continue
            form = op.grow(self, i)
            if form is not None:
                self.forms[form.output] = form
                self.absorbed.update(o.output for o in form.operands if o.node is not None)
        return self._regions(), self.refusals.reasons

    def _regions(self) -> list[Region]:
        regions = []
        for name, form in self.forms.items():
            if name in self.absorbed:
                continue
            root = without_trailing_batch_norm(form) if self.keep_post_bn else form
            if root is None or not root.has_leaf:
                continue
            nodes = region_nodes(root)
            if len(nodes) > root.emitted_nodes:
                regions.append(Region(root, nodes, region_rewires(root)))
        return regions

    def _operand(self, tensor: str, consumer: int) -> Form:
        form = self.forms.get(tensor)
        if form is not None and self.index.is_single_use(tensor, consumer):
            return form
        return self._identity(tensor)

    def _identity(self, tensor: str, axis: int | None = None) -> Form:
        """``tensor`` itself; its channel count read on ``axis`` when given (else axis 1, a Conv's)."""
        rank = self.index.rank(tensor)
        channels = self.index.channels(tensor) if axis in (None, 1) else self.index.dim(tensor, axis)
        identity = frozenset({("identity", tensor)})
        return Form(tensor, tensor, diagonal_geometry(channels), None, None, (), 0, identity, False, None, rank, False)

    # -- what descriptions call: one method per role -------------------------------------------------

    def grow_passthrough(self, i: int, op: Passthrough) -> Form:
        x = self._operand(op.x, i)
        return replace(x, output=self.index.nodes[i].output[0], op=op, node=i, operands=(x,), pad_nodes=())

    def grow_pool(self, i: int, op: AveragePool) -> Form:
        # Channels unknown (symbolic) are those of the branches it is summed with, as for an identity term.
        g = op.geometry(self.index.channels(op.x))
        return Form(self.index.nodes[i].output[0], op.x, g, op, i, (), g.macs_per_output_pixel(), frozenset({i}), False,
                    1, g.rank + 2, False)

    def grow_leaf(self, i: int, op: LeafOp) -> Form:
        kind = op.kind
        g = kind.geometry(op)
        rank, has_bias = kind.output_rank(op, self.index), op.bias is not None
        taken: list[Form] = []
        pad_nodes: list[int] = []
        tensor, reader = op.x, i
        while self.index.is_single_use(tensor, reader) and tensor in self.index.producer:
            producer = self.index.producer[tensor]
            affine = self.forms.get(tensor)
            if (affine is not None and affine.node == producer and affine.geometry.is_diagonal and affine.op is not None
                    and not any(affine is f for t in taken for f in subforms(t))):  # one taken already computes it
                if not self._takes_affine(i, op, g, affine):
                    break
                taken.append(affine)
                has_bias = has_bias or affine.has_bias
                readers = [n for n in region_nodes(affine) if affine.source in self.index.nodes[n].input]
                tensor, reader = affine.source, (readers[0] if len(readers) == 1 else None)
                continue
            padded = self._zero_pad(producer, g) if kind.takes_zero_pad else None
            if padded is None:
                break
            g = padded
            pad_nodes.append(producer)
            tensor, reader = self.index.nodes[producer].input[0], producer
        cost = g.macs_per_output_pixel() + sum(f.cost for f in taken)
        return Form(self.index.nodes[i].output[0], tensor, g, op, i, tuple(taken), cost, frozenset({i}), True,
                    kind.channel_axis(rank), rank, has_bias, tuple(pad_nodes))

    def grow_affine(self, i: int, op: ChannelAffine) -> Form | None:
        x = self._operand(op.x, i)
        geometry, channels, axis = x.geometry, x.geometry.out_channels, x.channel_axis
        for step in op.steps:
            for constant in step.values:
                if not constant.is_float and x.has_leaf:
                    raise malformed(self.index.nodes[i],
                                    f"combines a float tensor with the {type_name(constant.elem_type)} constant '{constant.name}'")
                found, count = step.axis(constant, x.rank)
                if isinstance(found, int) and axis is None and x.geometry.kind is not None:
                    found = Reason(Code.NOT_PER_CHANNEL,
                                   f"{step.acts} axis {found} of a tensor whose rank is not known (ranks are not declared "
                                   "inside functions and bodies), so whether that axis holds its channels cannot be told")
                if x.op is None and axis is None and isinstance(found, int):
                    # X itself: its channels are on the axis the constant picks
                    channels = self.index.dim(x.source, found)
                    geometry = diagonal_geometry(channels)
                    x = replace(x, geometry=geometry)
                if not isinstance(found, Reason) and found is not None and axis is not None and found != axis:
                    found = Reason(Code.NOT_PER_CHANNEL,
                                   f"{step.acts} axis {found} of a rank-{x.rank} tensor whose channels are on axis {axis} "
                                   "(a per-channel constant has shape [C,1,1] or [1,C,1,1]; after a MatMul, [C] on the last axis)")
                if not isinstance(found, Reason) and count is not None and channels is not None and count != channels:
                    found = Reason(Code.NOT_PER_CHANNEL, f"a constant of shape {list(constant.shape)} that does not match {channels} channels")
                if isinstance(found, Reason):
                    self.refusals.stop(i, found, x)
                    return None
                if found is not None:
                    axis = found
                channels = channels if count is None else count
        if geometry.is_diagonal and channels is not None and geometry.out_channels is None:
            geometry = geometry.with_channels(channels)
        cost = x.cost + (channels or 1)
        has_bias = x.has_bias or any(step.adds_offset for step in op.steps)
        return Form(self.index.nodes[i].output[0], x.source, geometry, op, i, (x,), cost, x.leaves, x.has_leaf,
                    axis, x.rank, has_bias)

    def grow_sum(self, i: int, op: Sum) -> Form | None:
        operands = tuple(self._operand(t, i) for t, _ in op.terms)
        if len({o.source for o in operands}) > 1:
            self.refusals.mixed_sources(i, operands)
            return None
        leafy = any(o.has_leaf for o in operands)
        operands = self._identities_on_the_leaf_axis(operands)
        axes = {o.channel_axis for o in operands} - {None}
        ranks = {o.rank for o in operands} - {None}
        if len(axes) > 1 or len(ranks) > 1:
            if leafy:
                self.refusals.refuse(i, Code.NOT_PER_CHANNEL, f"cannot merge its branches: their channels lie on different axes {sorted(axes)}")
            return None
        axis, rank = next(iter(axes), None), next(iter(ranks), None)
        try:
            geometry = merge_geometry([o.geometry for o in operands])
        except Refused as refused:
            if leafy:
                self.refusals.refuse(i, refused.reason.code, f"cannot merge its branches: {refused.reason.message}")
            return None
        axis = self._offsets_axis(i, op, geometry, axis, rank, leafy)
        if isinstance(axis, Reason):
            return None
        original = sum(o.cost for o in operands) + (geometry.out_channels or 1)
        if not geometry.is_diagonal and self._costs_too_much(i, geometry, original, operands):
            return None
        return Form(self.index.nodes[i].output[0], operands[0].source, geometry, op, i, operands, original,
                    frozenset().union(*(o.leaves for o in operands)), leafy, axis, rank,
                    any(o.has_bias for o in operands) or bool(op.offsets))

    # -- helpers of the roles ----------------------------------------------------------------------

    def _costs_too_much(self, i: int, geometry: Geometry, original: int, operands: tuple[Form, ...]) -> bool:
        """A merge that would cost more multiply-accumulates than its branches, or whose weight would be far
        larger than the weights it replaces (an AveragePool branch of a huge kernel becomes a huge kernel)."""
        shape = f"{'x'.join(map(str, geometry.kernel)) or 'dense'} operator with groups={geometry.groups}"
        fused = geometry.macs_per_output_pixel()  # also its weight's size
        if fused > original:
            self.refusals.refuse(i, Code.COST, f"merging its branches would give a {shape} costing {fused} MACs per output "
                                 f"position, more than the {original} of the branches it would replace; the branches "
                                 "are folded separately")
            return True
        stored = sum(math.prod(f.op.weight.shape) for o in operands for f in subforms(o) if isinstance(f.op, LeafOp))
        if fused > max(_GROWTH * stored, _SMALL_WEIGHT):
            self.refusals.refuse(i, Code.COST, f"merging its branches would give a {shape} of {fused} weights, "
                                 f"{fused / max(stored, 1):.0f}x the {stored} of the branches it would replace; "
                                 "the branches are folded separately")
            return True
        return False

    # -- helpers of the roles ----------------------------------------------------------------------

    def _identities_on_the_leaf_axis(self, operands: tuple[Form, ...]) -> tuple[Form, ...]:
        """Identity terms count their channels on the axis of the leaf they are summed with (a dense
        leaf's features are on the last axis)."""
        leaf = next((o for o in operands if o.geometry.kind is not None and o.rank is not None), None)
        if leaf is None:
            return operands
        axis = leaf.channel_axis
        return tuple(self._identity(o.source, axis) if o.op is None else o for o in operands)

    def _offsets_axis(self, i: int, op: Sum, geometry: Geometry, axis: int | None, rank: int | None,
                      leafy: bool) -> int | None | Reason:
        """The channel axis once the sum's constant terms are added, or the Reason one is not per channel."""
        for constant, _ in op.offsets:
            found = constant_axis(constant.shape, rank)
            count = None if found is None or isinstance(found, Reason) else dim(constant.shape, rank, found)
            if not isinstance(found, Reason) and found is not None and (
                (axis is not None and found != axis) or (geometry.out_channels is not None and count != geometry.out_channels)
            ):
                found = Reason(Code.NOT_PER_CHANNEL, f"an added constant of shape {list(constant.shape)} that is not per channel")
            if isinstance(found, Reason):
                if leafy:
                    self.refusals.refuse(i, found.code, f"cannot merge its branches: {found.message}")
                return found
            axis = axis if found is None else found
        return axis

    def _takes_affine(self, i: int, op: LeafOp, geometry: Geometry, affine: Form) -> bool:
        """Whether a leaf may take over the per-channel affine ``affine`` of its input (and refuse why not)."""
        kind = op.kind
        if not kind.takes_input_affine(op):
            return False
        in_axis = kind.input_axis(op, affine.rank)
        if affine.axis is None and self._ends_an_activation(affine):
            return False
        if affine.axis is not None and affine.axis != in_axis:
            self.refusals.refuse(i, Code.NOT_PER_CHANNEL, f"reads '{affine.output}', an affine of axis {affine.axis}, "
                                 f"not of {kind.input_words}: it stays a node")
            return False
        channels = affine.geometry.out_channels
        if channels is not None and geometry.in_channels is not None and channels != geometry.in_channels:
            return False
        if affine.axis is not None and self._channels_of(affine.source, affine.axis) != channels:
            self.refusals.refuse(i, Code.NOT_PER_CHANNEL, f"reads '{affine.output}', an affine of '{affine.source}', whose "
                                 f"channel count is not known to be its constants' {channels}: they could broadcast it to "
                                 "more channels, so the affine stays a node (give the input's shape)")
            return False
        if kind.shift_reaches_every_output(geometry):
            return True
        shift = _has_shift(affine, geometry)
        if shift is None:
            return False  # its numbers cannot be had (a division by zero): the fold would refuse it anyway
        if shift:
            self.refusals.refuse(
                i, Code.PADDED_INPUT_SHIFT,
                f"reads '{affine.output}', an affine x*t + s of its input with s != 0, through its {kind.padding_words}: the "
                "border would see 0 where the affine gives s, so the affine is not folded into it",
            )
            return False
        return True

    def _channels_of(self, tensor: str, axis: int) -> int | None:
        """The size of ``tensor`` on ``axis`` when declared (on axis 1, also when a Conv reading it implies it)."""
        return self.index.channels(tensor) if axis == 1 else self.index.dim(tensor, axis)

    def _ends_an_activation(self, affine: Form) -> bool:
        """A scalar factor right after a product of two tensors: the tail of an activation (GELU's ``* 0.5``).

        Folding it into the next layer saves one Mul but breaks the pattern onnxruntime fuses into
        one Gelu kernel, which measured 1.3x slower on the GELU networks of the fixtures; it stays.
        A scalar affine after any other activation (PP-LCNet's learnable ``x * a + b`` after its
        HardSwish) is a per-channel affine like any other.
        """
        producer = self.index.producer.get(affine.source)
        if producer is None or affine.has_bias:
            return False
        described = self.described(producer)
        return isinstance(described, Reason) and described.code == Code.NOT_LINEAR

    def _zero_pad(self, producer: int, geometry: Geometry) -> Geometry | None:
        """``geometry`` with the zero Pad ``producer`` taken over as its padding, or None (and why, for reports)."""
        pad = self.described(producer)
        if not isinstance(pad, ZeroPad):
            return None
        node = self.index.nodes[producer]
        rank = geometry.rank + 2
        axes = pad.axes if pad.axes is not None else tuple(range(len(pad.pads) // 2))
        if pad.axes is None and len(axes) != rank:
            self._pad_blockers[producer] = f"Pad '{node_label(node)}' pads {len(axes)} axes of a rank-{rank} tensor"
            return None
        amounts = {a % rank: (pad.pads[k], pad.pads[k + len(axes)]) for k, a in enumerate(axes)}
        if any(amounts.get(a, (0, 0)) != (0, 0) for a in (0, 1)):
            self._pad_blockers[producer] = f"Pad '{node_label(node)}' pads the batch or channel axis"
            return None
        begins = [geometry.pads[a] + amounts.get(a + 2, (0, 0))[0] for a in range(geometry.rank)]
        ends = [geometry.pads[geometry.rank + a] + amounts.get(a + 2, (0, 0))[1] for a in range(geometry.rank)]
        return geometry.with_pads(tuple(begins + ends))


def _has_shift(affine: Form, geometry: Geometry) -> bool | None:
    """Whether the per-channel affine ``affine`` adds anything (s != 0); None when its numbers cannot be had."""
    try:
        values = evaluate(replace(affine, geometry=affine.geometry if affine.geometry.out_channels else
                                  affine.geometry.with_channels(geometry.in_channels or 1)))
    except Refused:
        return None
    return bool((values.bias != 0).any())
