"""How each ONNX operator acts on convolution forms, or why it cannot.

``describe(node, index)`` turns a node into one of a few linear operations on conv-forms:

=====================  ===================================================================
``ConvLeaf``           ``Conv(X, W[, B])`` with constant W and B: a region's leaf
``ChannelAffine``      BatchNormalization, Mul/Div by a constant, Add/Sub of a constant, Neg
``Sum``                Add/Sub/Sum of two or more non-constant tensors
``Passthrough``        Identity, inference Dropout
``AveragePoolLeaf``    AveragePool whose padded positions count in the mean
=====================  ===================================================================

Anything else is :class:`NotLinear` with a code and a message a user can read; the code
``NONLINEAR`` marks an operator that is simply not linear (a Relu ends a block, it is no refusal).
Every attribute and input a fold would read is checked here: a node that is not valid ONNX (a
Conv with one input, ``group`` 0, pads of the wrong length, a bias of the wrong length) raises
:class:`~qarep_onnx.errors.InputModelError`.  Whether a constant really broadcasts per channel
depends on the data tensor's rank, so that check is :func:`channel_values_shape` and is applied
where the rank is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from .graph import (
    FLOAT_TYPES,
    CallerAttribute,
    Constant,
    GraphIndex,
    float_attribute,
    int_attribute,
    ints_attribute,
    malformed,
    node_label,
    string_attribute,
    type_name,
)


@dataclass(frozen=True)
class NotLinear:
    code: str
    message: str


@dataclass(frozen=True)
class ConvLeaf:
    x: str
    weight: Constant
    bias: Constant | None
    groups: int
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[int, ...]


@dataclass(frozen=True)
class AffineStep:
    """One per-channel step ``y -> y * factor`` or ``y -> y + offset``.

    ``kind`` is ``scale``, ``divide``, ``shift``, ``unshift`` (subtract), ``negate`` or
    ``batch_norm`` (``values`` = gamma, beta, mean, var; ``epsilon``).
    """

    kind: str
    values: tuple[Constant, ...] = ()
    epsilon: float = 0.0


@dataclass(frozen=True)
class ChannelAffine:
    x: str
    steps: tuple[AffineStep, ...]

    @property
    def constants(self) -> tuple[Constant, ...]:
        return tuple(c for step in self.steps for c in step.values)


@dataclass(frozen=True)
class Sum:
    terms: tuple[tuple[str, int], ...]  # (tensor, +1 or -1)
    offsets: tuple[tuple[Constant, int], ...]  # constants added (+1) or subtracted (-1)


@dataclass(frozen=True)
class Passthrough:
    x: str


@dataclass(frozen=True)
class AveragePoolLeaf:
    x: str
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[int, ...]


LinearOp = ConvLeaf | ChannelAffine | Sum | Passthrough | AveragePoolLeaf

# Ops that are linear in general but whose folding needs more than a conv-form (or changes
# shapes); reported by name when they sit inside a block.
_BLOCKING = {
    "Cast": "changes the element type",
    "QuantizeLinear": "quantizes",
    "DequantizeLinear": "dequantizes",
    "Pad": "pads explicitly (DBB-style chains are not folded)",
    "Slice": "crops (cropping branches are not folded)",
}
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _non_constant(node: onnx.NodeProto, index: GraphIndex, what: str, tensor: str) -> NotLinear:
    return NotLinear(
        "NON_CONSTANT",
        f"{what} '{tensor}' of {node.op_type} '{node_label(node)}' is not a constant: it {index.why_not_constant(tensor)}",
    )


def _inputs(node: onnx.NodeProto, least: int, most: int) -> None:
    n = len(node.input)
    if not least <= n <= most or not node.input[0]:
        needs = f"{least}" if least == most else f"{least} to {most}"
        raise malformed(node, f"has {n} inputs where it takes {needs}")


def resolve_pads(
    node: onnx.NodeProto, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]
) -> tuple[int, ...] | NotLinear:
    """Explicit pads of a Conv/AveragePool, resolving ``auto_pad`` where the input size does not matter."""
    rank = len(kernel)
    auto_pad = string_attribute(node, "auto_pad", "NOTSET") or "NOTSET"
    if auto_pad not in _AUTO_PADS:
        raise malformed(node, f"has auto_pad={auto_pad!r}; it must be one of {', '.join(_AUTO_PADS)}")
    if auto_pad == "NOTSET":
        return ints_attribute(node, "pads", (0,) * (2 * rank), length=2 * rank, minimum=0)
    if auto_pad == "VALID":
        return (0,) * (2 * rank)
    if all(s == 1 for s in stride):
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        small = [t // 2 for t in total]
        large = [t - t // 2 for t in total]
        return tuple(small + large) if auto_pad == "SAME_UPPER" else tuple(large + small)
    return NotLinear(
        "AUTO_PAD",
        f"{node.op_type} '{node_label(node)}' uses auto_pad={auto_pad} with stride {list(stride)}: "
        "its padding depends on the input size; re-export with explicit pads",
    )


def _float_constant(node: onnx.NodeProto, role: str, constant: Constant) -> None:
    if not constant.is_float:
        raise malformed(node, f"has a {type_name(constant.elem_type)} {role} '{constant.name}' where a float tensor is needed")


def _describe_conv(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | NotLinear:
    _inputs(node, 2, 3)
    weight = index.constant(node.input[1]) if node.input[1] else None
    if weight is None:
        return _non_constant(node, index, "weight", node.input[1])
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = index.constant(node.input[2])
        if bias is None:
            return _non_constant(node, index, "bias", node.input[2])
    if weight.elem_type not in FLOAT_TYPES:
        if weight.elem_type == onnx.TensorProto.BFLOAT16:
            return NotLinear("DTYPE", f"Conv '{node_label(node)}' has bfloat16 weights, which qarep-onnx does not fold")
        _float_constant(node, "weight", weight)
    if len(weight.shape) < 3 or any(d < 1 for d in weight.shape):
        raise malformed(node, f"has a weight of shape {list(weight.shape)}; a Conv weight is [M, C/group, k1, ...] with every dim >= 1")
    rank = len(weight.shape) - 2
    kernel = tuple(weight.shape[2:])
    declared = ints_attribute(node, "kernel_shape", kernel)
    if declared != kernel:
        raise malformed(node, f"declares kernel_shape {list(declared)} but its weight has kernel {list(kernel)}")
    stride = ints_attribute(node, "strides", (1,) * rank, length=rank, minimum=1)
    dilation = ints_attribute(node, "dilations", (1,) * rank, length=rank, minimum=1)
    groups = int_attribute(node, "group", 1, minimum=1)
    if weight.shape[0] % groups:
        raise malformed(node, f"has group={groups}, which does not divide its {weight.shape[0]} output channels")
    if bias is not None:
        if bias.elem_type != weight.elem_type:
            _float_constant(node, "bias", bias)
            raise malformed(node, f"has a {type_name(bias.elem_type)} bias and {type_name(weight.elem_type)} weights")
        if bias.shape != (weight.shape[0],):
            raise malformed(node, f"has a bias of shape {list(bias.shape)} for {weight.shape[0]} output channels")
    pads = resolve_pads(node, kernel, stride, dilation)
    if isinstance(pads, NotLinear):
        return pads
    return ConvLeaf(node.input[0], weight, bias, groups, stride, dilation, pads)


def _describe_batch_norm(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | NotLinear:
    _inputs(node, 5, 5)
    if int_attribute(node, "training_mode", 0) or len([o for o in node.output if o]) > 1:
        return NotLinear("BN_TRAINING", f"BatchNormalization '{node_label(node)}' runs in training mode")
    if not int_attribute(node, "spatial", 1):
        return NotLinear("NOT_PER_CHANNEL", f"BatchNormalization '{node_label(node)}' has spatial=0 (statistics per position)")
    epsilon = float_attribute(node, "epsilon", 1e-5)
    values = []
    for role, name in zip(("scale", "bias", "mean", "var"), node.input[1:5]):
        constant = index.constant(name)
        if constant is None:
            return _non_constant(node, index, role, name)
        _float_constant(node, role, constant)
        values.append(constant)
    shapes = {c.shape for c in values}
    if len(shapes) > 1 or len(next(iter(shapes))) != 1:
        raise malformed(node, f"has parameters of shapes {[list(c.shape) for c in values]}; each must be [C]")
    return ChannelAffine(node.input[0], (AffineStep("batch_norm", tuple(values), epsilon),))


def _describe_binary(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | NotLinear:
    a, b = node.input[0], node.input[1]
    ca, cb = index.constant(a), index.constant(b)
    op = node.op_type
    if ca is not None and cb is not None:
        return NotLinear("CONSTANT_EXPRESSION", f"{op} '{node_label(node)}' only combines constants")
    if ca is None and cb is None:
        if op in ("Add", "Sub"):
            return Sum(((a, 1), (b, 1 if op == "Add" else -1)), ())
        return NotLinear("NOT_LINEAR", f"{op} '{node_label(node)}' multiplies or divides two non-constant tensors")
    x, c, constant_first = (b, ca, True) if ca is not None else (a, cb, False)
    if op == "Mul":
        steps = (AffineStep("scale", (c,)),)
    elif op == "Add":
        steps = (AffineStep("shift", (c,)),)
    elif op == "Sub":
        steps = (AffineStep("negate"), AffineStep("shift", (c,))) if constant_first else (AffineStep("unshift", (c,)),)
    elif constant_first:  # Div(c, y)
        return NotLinear("NONLINEAR", f"Div '{node_label(node)}' divides a constant by the tensor")
    else:
        steps = (AffineStep("divide", (c,)),)
    return ChannelAffine(x, steps)


def _describe_sum(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | NotLinear:
    if not node.input:
        raise malformed(node, "has no inputs")
    terms = tuple((n, 1) for n in node.input if index.constant(n) is None)
    offsets = tuple((index.constant(n), 1) for n in node.input if index.constant(n) is not None)
    if not terms:
        return NotLinear("CONSTANT_EXPRESSION", f"Sum '{node_label(node)}' only adds constants")
    if len(terms) == 1:
        return ChannelAffine(terms[0][0], tuple(AffineStep("shift", (c,)) for c, _ in offsets))
    return Sum(terms, offsets)


def _describe_average_pool(node: onnx.NodeProto) -> LinearOp | NotLinear:
    _inputs(node, 1, 1)
    kernel = ints_attribute(node, "kernel_shape", (), minimum=1)
    if not kernel:
        raise malformed(node, "has no kernel_shape")
    rank = len(kernel)
    stride = ints_attribute(node, "strides", (1,) * rank, length=rank, minimum=1)
    dilation = ints_attribute(node, "dilations", (1,) * rank, length=rank, minimum=1)
    pads = resolve_pads(node, kernel, stride, dilation)
    if isinstance(pads, NotLinear):
        return pads
    if any(pads) and not int_attribute(node, "count_include_pad", 0):
        return NotLinear(
            "POOL_EXCLUDES_PAD",
            f"AveragePool '{node_label(node)}' excludes padding from its mean (count_include_pad=0): "
            "its border weights differ from a convolution's",
        )
    if int_attribute(node, "ceil_mode", 0) and any(s > 1 for s in stride):
        return NotLinear("POOL_CEIL_MODE", f"AveragePool '{node_label(node)}' uses ceil_mode with stride > 1")
    return AveragePoolLeaf(node.input[0], kernel, stride, dilation, pads)


def _describe_dropout(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | NotLinear:
    _inputs(node, 1, 3)
    mask = node.output[1] if len(node.output) > 1 else ""
    if mask and (index.consumer_nodes(mask) or mask in index.graph_outputs):
        return NotLinear("NOT_LINEAR", f"Dropout '{node_label(node)}' has its mask used")
    if len(node.input) > 2 and node.input[2]:
        training = index.constant(node.input[2])
        if training is None or training.shape not in ((), (1,)) or bool(training.load().reshape(-1)[0]):
            return NotLinear("NOT_LINEAR", f"Dropout '{node_label(node)}' may run in training mode")
    if int_attribute(node, "is_test", 1) == 0:  # opset < 7
        return NotLinear("NOT_LINEAR", f"Dropout '{node_label(node)}' runs in training mode (is_test=0)")
    return Passthrough(node.input[0])


def describe(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | NotLinear:
    """The linear operation a node applies to conv-forms, or why it applies none."""
    if node.domain not in ("", "ai.onnx"):
        return NotLinear("BLOCKING_OP", f"{node.domain}::{node.op_type} '{node_label(node)}' is a custom operator")
    try:
        return _describe(node, index)
    except CallerAttribute as caller:
        return NotLinear("NON_CONSTANT", caller.message)


def _describe(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | NotLinear:
    op = node.op_type
    if op == "Conv":
        return _describe_conv(node, index)
    if op == "BatchNormalization":
        return _describe_batch_norm(node, index)
    if op in ("Add", "Sub", "Mul", "Div") and len(node.input) == 2:
        return _describe_binary(node, index)
    if op == "Sum":
        return _describe_sum(node, index)
    if op == "Neg" and len(node.input) == 1:
        return ChannelAffine(node.input[0], (AffineStep("negate"),))
    if op == "Identity" and len(node.input) == 1:
        return Passthrough(node.input[0])
    if op == "Dropout":
        return _describe_dropout(node, index)
    if op == "AveragePool":
        return _describe_average_pool(node)
    if op in _BLOCKING:
        return NotLinear("BLOCKING_OP", f"{op} '{node_label(node)}' {_BLOCKING[op]}")
    return NotLinear("NONLINEAR", f"{op} '{node_label(node)}' is not linear")


def channel_values_shape(shape: tuple[int, ...], rank: int | None, channels: int | None) -> int | None | NotLinear:
    """Check that a constant of ``shape`` broadcasts per channel on a tensor of ``rank``.

    Returns the channel count the constant implies (``None`` for a scalar-like constant) or
    :class:`NotLinear` when it would broadcast along another axis or change the output shape.
    """
    size = 1
    for d in shape:
        size *= d
    if size == 1 and len(shape) <= 1:
        return None  # a scalar broadcasts to anything without changing its shape
    if rank is None:
        return NotLinear("NOT_PER_CHANNEL", f"a constant of shape {list(shape)} on a tensor of unknown rank")
    if len(shape) > rank:
        return NotLinear("NOT_PER_CHANNEL", f"a constant of shape {list(shape)} that would raise the rank of a rank-{rank} tensor")
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    if rank < 2 or padded[0] != 1 or any(d != 1 for d in padded[2:]):
        return NotLinear(
            "NOT_PER_CHANNEL",
            f"a constant of shape {list(shape)} that broadcasts along a non-channel axis of a rank-{rank} tensor "
            "(a per-channel constant has shape [C,1,1] or [1,C,1,1])",
        )
    if padded[1] == 1:
        return None
    if channels is not None and padded[1] != channels:
        return NotLinear("NOT_PER_CHANNEL", f"a constant of shape {list(shape)} that does not match {channels} channels")
    return padded[1]
