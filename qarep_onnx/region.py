"""Grow linear regions over one graph and decide which of them to fold.

One pass in topological order gives every tensor that is an affine function of a single tensor X
a symbolic :class:`Form` (``conv(X; W, b)`` without numbers): Conv leaves start forms, and
BatchNorm, per-channel Mul/Div/Add/Sub, Identity, Dropout, AveragePool and sums of forms over the
same X extend them.  A form may swallow an operand's form only when that operand has no other
reader and is not a graph output, so regions never overlap and never hide a tensor someone needs.

A form that nobody swallowed is a region root.  Roots with at least one Conv and at least two
nodes are folded.  Whenever a block cannot be merged (branches that disagree, a Cast between a
branch and its sum, a weight that is a graph input, ...) a :class:`~qarep_onnx.report.Refusal`
records why, in words.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


from .algebra import Geometry, MergeRefused, conv_geometry, diagonal_geometry, merge_geometry
from .graph import GraphIndex, node_label
from .ops import (
    AveragePoolLeaf,
    ChannelAffine,
    ConvLeaf,
    LinearOp,
    NotLinear,
    Passthrough,
    Sum,
    channel_values_shape,
    describe,
)
from .report import Refusal

# How far back from a sum's operand to look for the block input when explaining a refusal.
_EXPLAIN_DEPTH = 8
# Reasons a node right after a block gives for not extending it that are worth reporting; a
# Relu or a gating Mul after a block is simply where the block ends.
_REPORTED_STOPS = {"BN_TRAINING", "NON_CONSTANT", "NOT_PER_CHANNEL"}
# Operators that start a region; when one cannot, that is worth saying if a linear op follows it.
_LEAF_OPS = {"Conv"}


@dataclass(frozen=True)
class Form:
    """A tensor written as ``conv(source; W, b)``, without the numbers."""

    output: str  # the tensor this form computes (== source for the identity)
    source: str
    geometry: Geometry
    op: LinearOp | None  # None: the identity of ``source``
    node: int | None  # index of the node computing ``output`` (None for the identity)
    operands: tuple[Form, ...]
    cost: int  # multiply-accumulates per output position of the original nodes
    leaves: frozenset  # distinct branches: conv and pool node indices, ("identity", tensor) terms
    has_conv: bool

    @property
    def branches(self) -> int:
        return len(self.leaves)


@dataclass(frozen=True)
class Region:
    """A form to fold: its root tensor and every node that computes it."""

    form: Form
    nodes: tuple[int, ...]  # ascending, the root's node included

    @property
    def root_node(self) -> int:
        return self.form.node


def _without_trailing_batch_norm(form: Form) -> Form | None:
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
        if isinstance(f.op, ChannelAffine) and any(s.kind == "batch_norm" for s in f.op.steps):
            innermost_bn = f
    if innermost_bn is None:
        return form
    root = innermost_bn.operands[0]
    return root if root.node is not None else None


def region_nodes(form: Form) -> tuple[int, ...]:
    nodes: set[int] = set()
    stack = [form]
    while stack:
        f = stack.pop()
        if f.node is not None and f.node not in nodes:
            nodes.add(f.node)
            stack.extend(f.operands)
    return tuple(sorted(nodes))


class RegionFinder:
    """Finds the regions of one graph; see the module docstring."""

    def __init__(self, index: GraphIndex, keep_post_bn: bool = False, graph_name: str = "") -> None:
        self.index = index
        self.keep_post_bn = keep_post_bn
        self.graph_name = graph_name
        self.forms: dict[str, Form] = {}
        self.absorbed: set[str] = set()
        self.refusals: list[Refusal] = []
        self._refused_at: set[tuple[str, int]] = set()

    # -- the pass ----------------------------------------------------------------------------

    def find(self) -> tuple[list[Region], list[Refusal]]:
        for i, node in enumerate(self.index.nodes):
            if not node.output or not node.output[0] or node.output[0] in self.index.constants:
                continue  # nothing to compute, or a constant (Constant, Identity of a constant)
            op = describe(node, self.index)
            if isinstance(op, NotLinear):
                self._refuse_stop(i, op)
                if node.op_type in _LEAF_OPS:
                    self._refuse_leaf(i, op)
                continue
            form = self._extend(i, op)
            if form is not None:
                self.forms[form.output] = form
                self.absorbed.update(o.output for o in form.operands if o.node is not None)
        regions = []
        for name, form in self.forms.items():
            if name in self.absorbed:
                continue
            root = _without_trailing_batch_norm(form) if self.keep_post_bn else form
            if root is None or not root.has_conv:
                continue
            nodes = region_nodes(root)
            if len(nodes) >= 2:
                regions.append(Region(root, nodes))
        return regions, self.refusals

    def _operand(self, tensor: str, consumer: int) -> Form:
        form = self.forms.get(tensor)
        if form is not None and self.index.is_single_use(tensor, consumer):
            return form
        identity = frozenset({("identity", tensor)})
        return Form(tensor, tensor, diagonal_geometry(self.index.channels(tensor)), None, None, (), 0, identity, False)

    def _rank(self, form: Form) -> int | None:
        if not form.geometry.is_diagonal:
            return form.geometry.rank + 2
        return self.index.rank(form.output) or self.index.rank(form.source)

    def _extend(self, i: int, op: LinearOp) -> Form | None:
        node = self.index.nodes[i]
        out = node.output[0]
        if isinstance(op, ConvLeaf):
            g = conv_geometry(op.weight.shape, op.groups, op.stride, op.dilation, op.pads)
            return Form(out, op.x, g, op, i, (), g.macs_per_output_pixel(), frozenset({i}), True)
        if isinstance(op, AveragePoolLeaf):
            channels = self.index.channels(op.x)
            if channels is None:
                return None
            g = Geometry(channels, channels, channels, op.kernel, op.stride, op.dilation, op.pads)
            return Form(out, op.x, g, op, i, (), g.macs_per_output_pixel(), frozenset({i}), False)
        if isinstance(op, Passthrough):
            x = self._operand(op.x, i)
            return Form(out, x.source, x.geometry, op, i, (x,), x.cost, x.leaves, x.has_conv)
        if isinstance(op, ChannelAffine):
            return self._extend_affine(i, op)
        return self._extend_sum(i, op)

    def _extend_affine(self, i: int, op: ChannelAffine) -> Form | None:
        x = self._operand(op.x, i)
        geometry = x.geometry
        channels = geometry.out_channels
        for step in op.steps:
            for constant in step.values:
                if step.kind == "batch_norm":
                    implied = constant.shape[0] if len(constant.shape) == 1 else None
                    ok = implied is not None and (channels is None or implied == channels)
                    found = implied if ok else NotLinear(
                        "NOT_PER_CHANNEL", f"a BatchNormalization parameter of shape {list(constant.shape)}"
                    )
                else:
                    found = channel_values_shape(constant.shape, self._rank(x), channels)
                if isinstance(found, NotLinear):
                    self._refuse_stop(i, found, x)
                    return None
                channels = channels if found is None else found
        if geometry.is_diagonal and channels is not None and geometry.out_channels is None:
            geometry = geometry.with_channels(channels)
        cost = x.cost + (channels or 1)
        return Form(self.index.nodes[i].output[0], x.source, geometry, op, i, (x,), cost, x.leaves, x.has_conv)

    def _extend_sum(self, i: int, op: Sum) -> Form | None:
        node = self.index.nodes[i]
        operands = tuple(self._operand(t, i) for t, _ in op.terms)
        if len({o.source for o in operands}) > 1:
            self._explain_mixed_sources(i, operands)
            return None
        try:
            geometry = merge_geometry([o.geometry for o in operands])
        except MergeRefused as refused:
            if any(o.has_conv for o in operands):
                self._refuse(i, refused.code, f"cannot merge its branches: {refused.message}")
            return None
        rank = None if geometry.is_diagonal else geometry.rank + 2
        for constant, _ in op.offsets:
            found = channel_values_shape(constant.shape, rank, geometry.out_channels)
            if isinstance(found, NotLinear):
                if any(o.has_conv for o in operands):
                    self._refuse(i, found.code, f"cannot merge its branches: {found.message}")
                return None
        original = sum(o.cost for o in operands) + (geometry.out_channels or 1)
        fused = geometry.macs_per_output_pixel()
        if not geometry.is_diagonal and fused > original:
            self._refuse(
                i,
                "COST",
                f"merging its branches would give a {'x'.join(map(str, geometry.kernel))} Conv with "
                f"groups={geometry.groups} costing {fused} MACs per output position, more than the "
                f"{original} of the branches it would replace; the branches are folded separately",
            )
            return None
        return Form(
            node.output[0],
            operands[0].source,
            geometry,
            op,
            i,
            operands,
            original,
            frozenset().union(*(o.leaves for o in operands)),
            any(o.has_conv for o in operands),
        )

    # -- refusals ----------------------------------------------------------------------------

    def _refuse(self, i: int, code: str, message: str, blocker: int | None = None) -> None:
        node = self.index.nodes[i]
        key = (code, blocker if blocker is not None else i)
        if key in self._refused_at:
            return
        self._refused_at.add(key)
        names = [node_label(node)]
        if blocker is not None and blocker != i:
            names.append(node_label(self.index.nodes[blocker]))
        self.refusals.append(Refusal(code, f"{node.op_type} '{node_label(node)}' {message}", tuple(names), self.graph_name))

    def _refuse_stop(self, i: int, reason: NotLinear, operand: Form | None = None) -> None:
        """A node that could have extended a block refuses; report it when a block is at stake."""
        node = self.index.nodes[i]
        if reason.code not in _REPORTED_STOPS:
            return
        if operand is None:
            data = [t for t in node.input[:1] if t in self.forms and self.index.is_single_use(t, i)]
            if not data:
                return
            operand = self.forms[data[0]]
        if not operand.has_conv:
            return
        key = (reason.code, i)
        if key not in self._refused_at:
            self._refused_at.add(key)
            message = reason.message
            if f"'{node_label(node)}'" not in message:
                message = f"{node.op_type} '{node_label(node)}' has {message}"
            if len(region_nodes(operand)) >= 2:
                message += "; the block before it is folded without it"
            else:
                message += "; it stays a node of its own"
            self.refusals.append(Refusal(reason.code, message, (node_label(node),), self.graph_name))

    def _refuse_leaf(self, i: int, reason: NotLinear) -> None:
        """A Conv that cannot start a region although a linear op reads it (a Conv -> BN left as two nodes)."""
        if reason.code == "NONLINEAR":
            return
        node = self.index.nodes[i]
        readers = self.index.consumer_nodes(node.output[0])
        if not any(not isinstance(describe(self.index.nodes[r], self.index), NotLinear) for r in readers):
            return
        key = (reason.code, i)
        if key not in self._refused_at:
            self._refused_at.add(key)
            message = f"{reason.message}; it is not folded with the linear operators that follow it"
            self.refusals.append(Refusal(reason.code, message, (node_label(node),), self.graph_name))

    def _explain_mixed_sources(self, i: int, operands: tuple[Form, ...]) -> None:
        """A sum of forms over different tensors: say why, when one of them derives from another."""
        sources = {o.source for o in operands}
        if not any(o.has_conv for o in operands):
            return
        for operand in operands:
            others = sources - {operand.source}
            found = self._find_blocker(operand.source, i, others, operand.has_conv)
            if found is not None:
                code, message, blocker = found
                self._refuse(i, code, f"cannot merge its branches: {message}", blocker)

    def _find_blocker(
        self, start: str, consumer: int, targets: set[str], start_has_leaf: bool
    ) -> tuple[str, str, int] | None:
        """Walk up from ``start`` to a tensor computed from one of ``targets``; name what broke the chain.

        A non-linear operator (a Relu) is reported only when its own output is summed as a term
        (``Relu(x)`` as the identity term): where a Conv reads it, as in a ResNet residual, the
        branch is a deeper non-linear network and the block simply ends there.
        """
        index = self.index
        queue = deque([(start, consumer, 0)])
        seen = {start}
        while queue:
            tensor, reader, depth = queue.popleft()
            form = self.forms.get(tensor)
            if form is not None and form.source in targets and form.has_conv:
                if tensor in index.graph_outputs:
                    return "GRAPH_OUTPUT", f"'{tensor}' inside the block is a graph output", form.node
                if not index.is_single_use(tensor, reader):
                    readers = ", ".join(node_label(index.nodes[r]) for r in index.consumer_nodes(tensor) if r != reader)
                    return "FAN_OUT", f"'{tensor}' inside the block is also read by {readers}", form.node
            producer = index.producer.get(tensor)
            if producer is None or depth >= _EXPLAIN_DEPTH:
                continue
            node = index.nodes[producer]
            inputs = [t for t in node.input if t and index.constant(t) is None]
            if any(t in targets or (t in self.forms and self.forms[t].source in targets) for t in inputs):
                reason = describe(node, index)
                if isinstance(reason, NotLinear):
                    if reason.code == "NONLINEAR" and (depth > 0 or start_has_leaf):
                        continue  # a deeper non-linear branch: not a block, nothing to report
                    code = "BLOCKING_OP" if reason.code == "NONLINEAR" else reason.code
                    return code, reason.message, producer
            for t in inputs:
                if t not in seen:
                    seen.add(t)
                    queue.append((t, producer, depth + 1))
        return None
