"""Grow linear regions over one graph and decide which of them to fold.

One pass in topological order gives every tensor that is an affine function of a single tensor X
a symbolic :class:`Form` (``L(X; W, b)`` without numbers, ``L`` a Conv, a ConvTranspose or a
Gemm/MatMul): leaves start forms, and BatchNorm, per-channel Mul/Div/Add/Sub, Identity, Dropout,
AveragePool and sums of forms over the same X extend them.  A leaf also takes over what feeds it,
when nothing else reads that: a per-channel affine of its input (``L(t*X + s)``, exact where no
padding reads the zero that ``s`` would have filled) and a zero Pad (which becomes the Conv's own
padding).  A form may swallow an operand's form only when that operand has no other reader and is
not a graph output, so regions never overlap and never hide a tensor someone needs.

A form's channels lie on one axis: axis 1 after a Conv or ConvTranspose, the last axis after a
Gemm/MatMul; a constant or a BatchNormalization acting on another axis stops it.

A form that nobody swallowed is a region root.  Roots with a leaf that take more nodes than the
one (or two, MatMul + Add) they would become are folded.  Whenever a block cannot be merged
(branches that disagree, a Cast between a branch and its sum, a weight that is a graph input, ...)
a :class:`~qarep_onnx.errors.Reason` records why, in words.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from ..errors import Code, Reason, Refused
from ..graph.attributes import malformed, node_label
from ..graph.index import GraphIndex
from ..graph.tensors import type_name
from .algebra import (
    Geometry,
    conv_geometry,
    conv_transpose_geometry,
    dense_geometry,
    diagonal_geometry,
    merge_geometry,
)
from .ops import (
    AveragePoolLeaf,
    ChannelAffine,
    ConvLeaf,
    ConvTransposeLeaf,
    DenseLeaf,
    Leaf,
    LinearOp,
    Passthrough,
    Sum,
    ZeroPad,
    constant_axis,
    describe,
)

# How far back from a sum's operand to look for the block input when explaining a refusal.
_EXPLAIN_DEPTH = 8
# Reasons a node right after a block gives for not extending it that are worth reporting; a
# Relu or a gating Mul after a block is simply where the block ends.
_REPORTED_STOPS = {Code.BN_TRAINING, Code.NON_CONSTANT, Code.NOT_PER_CHANNEL}
# Operators that start a region; when one cannot, that is worth saying if a linear op follows it.
# (Not MatMul: in attention, MatMul of two activations followed by a scale is common and no fold.)
_LEAF_OPS = {"Conv", "ConvTranspose", "Gemm"}
_SHIFTING_STEPS = {"shift", "unshift", "batch_norm"}


@dataclass(frozen=True)
class Form:
    """A tensor written as ``L(source; W, b)``, without the numbers."""

    output: str  # the tensor this form computes (== source for the identity)
    source: str
    geometry: Geometry
    op: LinearOp | None  # None: the identity of ``source``
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
            nodes.update(f.pad_nodes)
            stack.extend(f.operands)
    return tuple(sorted(nodes))


def emitted_nodes(form: Form) -> int:
    """How many nodes the folded region becomes: one, or MatMul + Add for a dense form with a bias that
    is not known to act on a 2-D input (a Gemm)."""
    if form.geometry.kind == "dense" and form.rank != 2 and form.has_bias:
        return 2
    return 1


def channel_axis(form: Form) -> int | None:
    """The axis a form's channels lie on, given its kind and rank."""
    kind = form.geometry.kind
    if kind in ("conv", "conv_transpose") and not form.geometry.is_diagonal:
        return 1
    if kind == "dense":
        return None if form.rank is None else form.rank - 1
    return form.axis


def channel_axis_of(geometry: Geometry, rank: int | None) -> int | None:
    """Where a leaf's output channels lie: axis 1 for a (transposed) convolution, the last axis for a dense product."""
    if geometry.kind == "dense":
        return None if rank is None else rank - 1
    return 1


def _dim(shape: tuple[int, ...], rank: int | None, axis: int) -> int:
    padded = (1,) * ((rank or len(shape)) - len(shape)) + tuple(shape)
    return padded[axis]


def _shift_reaches_every_output(geometry: Geometry) -> bool:
    """Whether ``L(X + s)`` equals ``L(X) + L(s)`` everywhere: every output reads every tap from real input.

    A padded Conv reads zeros at the border where ``X + s`` would give ``s``; a ConvTranspose's border
    outputs receive fewer taps than the others unless its kernel is 1 and it neither strides nor pads.
    """
    if geometry.kind == "dense":
        return True
    if geometry.kind == "conv_transpose":
        return (all(k == 1 for k in geometry.kernel) and all(s == 1 for s in geometry.stride)
                and not any(geometry.pads) and not any(geometry.output_padding))
    return not any(geometry.pads)


def _has_shift(affine: Form, geometry: Geometry) -> bool | None:
    """Whether the per-channel affine ``affine`` adds anything (s != 0); None when its numbers cannot be had."""
    from .evaluate import evaluate  # the numbers of a few per-channel constants

    try:
        values = evaluate(replace(affine, geometry=affine.geometry if affine.geometry.out_channels else
                                  affine.geometry.with_channels(geometry.in_channels or 1)))
    except Refused:
        return None
    return bool((values.bias != 0).any())


def malformed_constant(node, constant) -> Exception:
    return malformed(node, f"combines a float tensor with the {type_name(constant.elem_type)} constant '{constant.name}'")


class RegionFinder:
    """Finds the regions of one graph; see the module docstring."""

    def __init__(self, index: GraphIndex, keep_post_bn: bool = False, graph_name: str = "") -> None:
        self.index = index
        self.keep_post_bn = keep_post_bn
        self.graph_name = graph_name
        self.forms: dict[str, Form] = {}
        self.absorbed: set[str] = set()
        self.refusals: list[Reason] = []
        self._refused_at: set[tuple[str, int]] = set()
        self._pads: dict[int, ZeroPad | Reason] = {}
        self._pad_blockers: dict[int, str] = {}  # Pad nodes a Conv could not take over, and why

    # -- the pass ----------------------------------------------------------------------------

    def find(self) -> tuple[list[Region], list[Reason]]:
        for i, node in enumerate(self.index.nodes):
            if not node.output or not node.output[0] or node.output[0] in self.index.constants:
                continue  # nothing to compute, or a constant (Constant, Identity of a constant)
            op = describe(node, self.index)
            if isinstance(op, Reason):
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
            if root is None or not root.has_leaf:
                continue
            nodes = region_nodes(root)
            if len(nodes) > emitted_nodes(root):
                regions.append(Region(root, nodes))
        return regions, self.refusals

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

    def _extend(self, i: int, op: LinearOp) -> Form | None:
        node = self.index.nodes[i]
        out = node.output[0]
        if isinstance(op, (ConvLeaf, ConvTransposeLeaf, DenseLeaf)):
            return self._leaf(i, op)
        if isinstance(op, AveragePoolLeaf):
            channels = self.index.channels(op.x)
            if channels is None:
                return None
            g = Geometry(channels, channels, channels, op.kernel, op.stride, op.dilation, op.pads)
            rank = len(op.kernel) + 2
            return Form(out, op.x, g, op, i, (), g.macs_per_output_pixel(), frozenset({i}), False, 1, rank, False)
        if isinstance(op, Passthrough):
            x = self._operand(op.x, i)
            return replace(x, output=out, op=op, node=i, operands=(x,), pad_nodes=())
        if isinstance(op, ChannelAffine):
            return self._extend_affine(i, op)
        if isinstance(op, Sum):
            return self._extend_sum(i, op)
        return None  # a zero Pad: only a Conv reading it takes it over

    # -- leaves ------------------------------------------------------------------------------

    def _leaf(self, i: int, op: Leaf) -> Form:
        node = self.index.nodes[i]
        if isinstance(op, ConvLeaf):
            g = conv_geometry(op.weight.shape, op.groups, op.stride, op.dilation, op.pads)
            rank, has_bias = g.rank + 2, op.bias is not None
        elif isinstance(op, ConvTransposeLeaf):
            g = conv_transpose_geometry(op.weight.shape, op.groups, op.stride, op.dilation, op.pads, op.output_padding)
            rank, has_bias = g.rank + 2, op.bias is not None
        else:
            g = dense_geometry(op.out_features, op.in_features, op.trans_a)
            rank = 2 if op.op_type == "Gemm" else self.index.rank(op.x)
            has_bias = op.bias is not None
        taken: list[Form] = []
        pad_nodes: list[int] = []
        tensor, reader = op.x, i
        while self.index.is_single_use(tensor, reader) and tensor in self.index.producer:
            producer = self.index.producer[tensor]
            affine = self.forms.get(tensor)
            if affine is not None and affine.node == producer and affine.geometry.is_diagonal and affine.op is not None:
                if not self._takes_affine(i, op, g, affine):
                    break
                taken.append(affine)
                has_bias = has_bias or affine.has_bias
                readers = [n for n in region_nodes(affine) if affine.source in self.index.nodes[n].input]
                tensor, reader = affine.source, (readers[0] if len(readers) == 1 else None)
                continue
            padded = self._zero_pad(producer, g) if isinstance(op, ConvLeaf) else None
            if padded is None:
                break
            g = padded
            pad_nodes.append(producer)
            tensor, reader = self.index.nodes[producer].input[0], producer
        cost = g.macs_per_output_pixel() + sum(f.cost for f in taken)
        return Form(node.output[0], tensor, g, op, i, tuple(taken), cost, frozenset({i}), True, channel_axis_of(g, rank),
                    rank, has_bias, tuple(pad_nodes))

    def _takes_affine(self, i: int, op: Leaf, geometry: Geometry, affine: Form) -> bool:
        """Whether a leaf may take over the per-channel affine ``affine`` of its input (and refuse why not)."""
        if isinstance(op, DenseLeaf):
            if op.trans_a:
                return False  # features on the input's first axis: no per-feature affine to take over
            in_axis = None if affine.rank is None else affine.rank - 1
        else:
            in_axis = 1
        if affine.axis is None and self._ends_an_activation(affine):
            return False
        if affine.axis is not None and affine.axis != in_axis:
            where = "its features" if isinstance(op, DenseLeaf) else "its input channels"
            self._refuse(i, Code.NOT_PER_CHANNEL,
                         f"reads '{affine.output}', an affine of axis {affine.axis}, not of {where}: it stays a node")
            return False
        channels = affine.geometry.out_channels
        if channels is not None and geometry.in_channels is not None and channels != geometry.in_channels:
            return False
        shift = None if _shift_reaches_every_output(geometry) else _has_shift(affine, geometry)
        if shift is None and not _shift_reaches_every_output(geometry):
            return False  # its numbers cannot be had (a division by zero): the fold would refuse it anyway
        if shift:
            padding = "pads" if geometry.kind == "conv" else "kernel, stride or pads"
            self._refuse(i, Code.PADDED_INPUT_SHIFT,
                f"reads '{affine.output}', an affine x*t + s of its input with s != 0, through its {padding}: the "
                "border would see 0 where the affine gives s, so the affine is not folded into it",
            )
            return False
        return True

    def _ends_an_activation(self, affine: Form) -> bool:
        """A scalar factor right after a non-linear operator: the tail of an activation (GELU's ``* 0.5``).

        Folding it into the next layer saves one Mul but breaks the pattern onnxruntime fuses into
        one Gelu kernel, which measured 1.3x slower on the GELU networks of the fixtures; it stays.
        """
        producer = self.index.producer.get(affine.source)
        return producer is not None and isinstance(describe(self.index.nodes[producer], self.index), Reason)

    def _zero_pad(self, producer: int, geometry: Geometry) -> Geometry | None:
        """``geometry`` with the zero Pad ``producer`` taken over as its padding, or None (and why, for reports)."""
        node = self.index.nodes[producer]
        if node.op_type != "Pad":
            return None
        pad = self._pads.get(producer)
        if pad is None:
            pad = self._pads[producer] = describe(node, self.index)
        if isinstance(pad, Reason):
            return None
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

    # -- affine steps and sums ---------------------------------------------------------------

    def _extend_affine(self, i: int, op: ChannelAffine) -> Form | None:
        x = self._operand(op.x, i)
        geometry = x.geometry
        channels = geometry.out_channels
        axis = channel_axis(x)
        for step in op.steps:
            for constant in step.values:
                if not constant.is_float and x.has_leaf:
                    raise malformed_constant(self.index.nodes[i], constant)
                if step.kind == "batch_norm":
                    found = 1 if x.rank is None or x.rank >= 2 else Reason(Code.NOT_PER_CHANNEL, f"a BatchNormalization on a rank-{x.rank} tensor")
                    count = constant.shape[0]
                else:
                    found = constant_axis(constant.shape, x.rank)
                    count = None if found is None or isinstance(found, Reason) else _dim(constant.shape, x.rank, found)
                if x.op is None and axis is None and isinstance(found, int):
                    # X itself: its channels are on the axis the constant picks
                    channels = self.index.dim(x.source, found)
                    geometry = diagonal_geometry(channels)
                    x = replace(x, geometry=geometry)
                if not isinstance(found, Reason) and found is not None and axis is not None and found != axis:
                    what = "BatchNormalization normalizes" if step.kind == "batch_norm" else "a constant varies along"
                    found = Reason(Code.NOT_PER_CHANNEL,
                        f"{what} axis {found} of a rank-{x.rank} tensor whose channels are on axis {axis} "
                        "(a per-channel constant has shape [C,1,1] or [1,C,1,1]; after a MatMul, [C] on the last axis)",
                    )
                if not isinstance(found, Reason) and count is not None and channels is not None and count != channels:
                    found = Reason(Code.NOT_PER_CHANNEL, f"a constant of shape {list(constant.shape)} that does not match {channels} channels")
                if isinstance(found, Reason):
                    self._refuse_stop(i, found, x)
                    return None
                if found is not None:
                    axis = found
                channels = channels if count is None else count
        if geometry.is_diagonal and channels is not None and geometry.out_channels is None:
            geometry = geometry.with_channels(channels)
        cost = x.cost + (channels or 1)
        has_bias = x.has_bias or any(step.kind in _SHIFTING_STEPS for step in op.steps)
        return Form(self.index.nodes[i].output[0], x.source, geometry, op, i, (x,), cost, x.leaves, x.has_leaf,
                    axis, x.rank, has_bias)

    def _extend_sum(self, i: int, op: Sum) -> Form | None:
        node = self.index.nodes[i]
        operands = tuple(self._operand(t, i) for t, _ in op.terms)
        if len({o.source for o in operands}) > 1:
            self._explain_mixed_sources(i, operands)
            return None
        leafy = any(o.has_leaf for o in operands)
        dense = [o for o in operands if o.geometry.kind == "dense"]
        if dense and dense[0].rank is not None:  # an identity term counts its channels on the features axis
            axis = dense[0].rank - 1
            operands = tuple(self._identity(o.source, axis) if o.op is None else o for o in operands)
        axes = {channel_axis(o) for o in operands} - {None}
        ranks = {o.rank for o in operands} - {None}
        if len(axes) > 1 or len(ranks) > 1:
            if leafy:
                self._refuse(i, Code.NOT_PER_CHANNEL, f"cannot merge its branches: their channels lie on different axes {sorted(axes)}")
            return None
        axis, rank = next(iter(axes), None), next(iter(ranks), None)
        try:
            geometry = merge_geometry([o.geometry for o in operands])
        except Refused as refused:
            if leafy:
                self._refuse(i, refused.reason.code, f"cannot merge its branches: {refused.reason.message}")
            return None
        for constant, _ in op.offsets:
            found = constant_axis(constant.shape, rank)
            count = None if found is None or isinstance(found, Reason) else _dim(constant.shape, rank, found)
            if not isinstance(found, Reason) and found is not None and (
                (axis is not None and found != axis) or (geometry.out_channels is not None and count != geometry.out_channels)
            ):
                found = Reason(Code.NOT_PER_CHANNEL, f"an added constant of shape {list(constant.shape)} that is not per channel")
            if isinstance(found, Reason):
                if leafy:
                    self._refuse(i, found.code, f"cannot merge its branches: {found.message}")
                return None
            axis = axis if found is None else found
        original = sum(o.cost for o in operands) + (geometry.out_channels or 1)
        fused = geometry.macs_per_output_pixel()
        if not geometry.is_diagonal and fused > original:
            self._refuse(i, Code.COST,
                f"merging its branches would give a {'x'.join(map(str, geometry.kernel)) or 'dense'} operator with "
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
            leafy,
            axis,
            rank,
            any(o.has_bias for o in operands) or bool(op.offsets),
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
        self.refusals.append(Reason(code, f"{node.op_type} '{node_label(node)}' {message}", tuple(names), self.graph_name))

    def _refuse_stop(self, i: int, reason: Reason, operand: Form | None = None) -> None:
        """A node that could have extended a block refuses; report it when a block is at stake."""
        node = self.index.nodes[i]
        if reason.code not in _REPORTED_STOPS:
            return
        if operand is None:
            data = [t for t in node.input[:1] if t in self.forms and self.index.is_single_use(t, i)]
            if not data:
                return
            operand = self.forms[data[0]]
        if not operand.has_leaf:
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
            self.refusals.append(Reason(reason.code, message, (node_label(node),), self.graph_name))

    def _refuse_leaf(self, i: int, reason: Reason) -> None:
        """A Conv that cannot start a region although a linear op reads it (a Conv -> BN left as two nodes)."""
        if not reason.code.is_refusal:
            return
        node = self.index.nodes[i]
        readers = self.index.consumer_nodes(node.output[0])
        if not any(not isinstance(describe(self.index.nodes[r], self.index), Reason) for r in readers):
            return
        key = (reason.code, i)
        if key not in self._refused_at:
            self._refused_at.add(key)
            message = f"{reason.message}; it is not folded with the linear operators that follow it"
            self.refusals.append(Reason(reason.code, message, (node_label(node),), self.graph_name))

    def _explain_mixed_sources(self, i: int, operands: tuple[Form, ...]) -> None:
        """A sum of forms over different tensors: say why, when one of them derives from another."""
        sources = {o.source for o in operands}
        if not any(o.has_leaf for o in operands):
            return
        for operand in operands:
            others = sources - {operand.source}
            found = self._find_blocker(operand.source, i, others, operand.has_leaf)
            if found is not None:
                code, message, blocker = found
                self._refuse(i, code, f"cannot merge its branches: {message}", blocker)

    def _find_blocker(
        self, start: str, consumer: int, targets: set[str], start_has_leaf: bool
    ) -> tuple[str, str, int] | None:
        """Walk up from ``start`` to a tensor computed from one of ``targets``; name what broke the chain.

        A non-linear operator (a Relu, or a product of two tensors such as GELU's) is reported only
        when its own output is summed as a term (``Relu(x)`` as the identity term, a branch scaled
        by a graph input): where a Conv reads it, as in a ResNet residual or a transformer's MLP,
        the branch is a deeper non-linear network and the block simply ends there.
        """
        index = self.index
        queue = deque([(start, consumer, 0)])
        seen = {start}
        while queue:
            tensor, reader, depth = queue.popleft()
            form = self.forms.get(tensor)
            if form is not None and form.source in targets and form.has_leaf:
                if tensor in index.graph_outputs:
                    return Code.GRAPH_OUTPUT, f"'{tensor}' inside the block is a graph output", form.node
                if not index.is_single_use(tensor, reader):
                    readers = ", ".join(node_label(index.nodes[r]) for r in index.consumer_nodes(tensor) if r != reader)
                    return Code.FAN_OUT, f"'{tensor}' inside the block is also read by {readers}", form.node
            producer = index.producer.get(tensor)
            if producer is None or depth >= _EXPLAIN_DEPTH:
                continue
            node = index.nodes[producer]
            inputs = [t for t in node.input if t and index.constant(t) is None]
            if any(t in targets or (t in self.forms and self.forms[t].source in targets) for t in inputs):
                reason = describe(node, index)
                if producer in self._pad_blockers:
                    reason = Reason(Code.BLOCKING_OP, self._pad_blockers[producer])
                elif isinstance(reason, ZeroPad):
                    reason = Reason(Code.BLOCKING_OP, f"Pad '{node_label(node)}' pads a tensor no Conv reads directly")
                if isinstance(reason, Reason):
                    if reason.code in (Code.ENDS_BLOCK, Code.NOT_LINEAR) and (depth > 0 or start_has_leaf):
                        continue  # a deeper non-linear branch: not a block, nothing to report
                    code = Code.BLOCKING_OP if reason.code == Code.ENDS_BLOCK else reason.code
                    return code, reason.message, producer
            for t in inputs:
                if t not in seen:
                    seen.add(t)
                    queue.append((t, producer, depth + 1))
        return None
