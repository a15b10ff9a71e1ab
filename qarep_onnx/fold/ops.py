"""How each ONNX operator acts on convolution forms, or why it cannot.

``describe(node, index)`` turns a node into one of a few linear operations on conv-forms:

=======================  =================================================================
``ConvLeaf``             ``Conv(X, W[, B])`` with constant W and B: a region's leaf
``ConvTransposeLeaf``    ``ConvTranspose(X, W[, B])`` with constant W and B
``DenseLeaf``            ``Gemm(X, B[, C])`` or ``MatMul(X, B)`` with a constant 2-D B
``ChannelAffine``        BatchNormalization, Mul/Div by a constant, Add/Sub of a constant, Neg
``Sum``                  Add/Sub/Sum of two or more non-constant tensors
``Passthrough``          Identity, inference Dropout
``AveragePoolLeaf``      AveragePool whose padded positions count in the mean
``ZeroPad``              a constant-mode Pad with zeros (a Conv reading it takes it as its own padding)
=======================  =================================================================

Anything else is :class:`Reason` with a code and a message a user can read; the code
``NONLINEAR`` marks an operator that is simply not linear (a Relu ends a block, it is no refusal).
Every attribute and input a fold would read is checked here: a node that is not valid ONNX (a
Conv with one input, ``group`` 0, pads of the wrong length, a bias of the wrong length) raises
:class:`~qarep_onnx.errors.InputModelError`.  Whether a constant really broadcasts per channel
depends on the data tensor's rank, so :func:`constant_axis` only says along which axis it varies
and the region judges that where the rank is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..errors import Code, Reason, Refused
from ..graph.attributes import (
    float_attribute,
    int_attribute,
    ints_attribute,
    malformed,
    node_label,
    string_attribute,
)
from ..graph.index import GraphIndex
from ..graph.tensors import FLOAT_TYPES, Constant, type_name


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
class ConvTransposeLeaf:
    x: str
    weight: Constant  # ONNX layout (in, out / groups, *kernel)
    bias: Constant | None
    groups: int
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[int, ...]
    output_padding: tuple[int, ...]


@dataclass(frozen=True)
class DenseLeaf:
    """``alpha * X' W' + beta * C`` (Gemm) or ``X W`` (MatMul) with constant weights."""

    x: str
    weight: Constant  # B
    bias: Constant | None  # C
    op_type: str  # "Gemm" or "MatMul"
    alpha: float = 1.0
    beta: float = 1.0
    trans_a: bool = False
    trans_b: bool = False

    @property
    def out_features(self) -> int:
        return self.weight.shape[0] if self.trans_b else self.weight.shape[1]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1] if self.trans_b else self.weight.shape[0]


@dataclass(frozen=True)
class ZeroPad:
    """``Pad(X)`` with zeros; ``pads`` per axis of X (begins, then ends), or ``axes`` when only some are named."""

    x: str
    pads: tuple[int, ...]
    axes: tuple[int, ...] | None  # None: every axis, in order


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


LinearOp = ConvLeaf | ConvTransposeLeaf | DenseLeaf | ChannelAffine | Sum | Passthrough | AveragePoolLeaf | ZeroPad
Leaf = ConvLeaf | ConvTransposeLeaf | DenseLeaf  # what starts a region

# Ops that are linear in general but whose folding needs more than a conv-form (or changes
# shapes); reported by name when they sit inside a block.
_BLOCKING = {
    "Cast": "changes the element type",
    "QuantizeLinear": "quantizes",
    "DequantizeLinear": "dequantizes",
    "Slice": "crops (cropping branches are not folded)",
}
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _non_constant(node: onnx.NodeProto, index: GraphIndex, what: str, tensor: str) -> Reason:
    return Reason(
        Code.NON_CONSTANT,
        f"{what} '{tensor}' of {node.op_type} '{node_label(node)}' is not a constant: it {index.why_not_constant(tensor)}",
    )


def _inputs(node: onnx.NodeProto, least: int, most: int) -> None:
    n = len(node.input)
    if not least <= n <= most or not node.input[0]:
        needs = f"{least}" if least == most else f"{least} to {most}"
        raise malformed(node, f"has {n} inputs where it takes {needs}")


def resolve_pads(
    node: onnx.NodeProto, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]
) -> tuple[int, ...] | Reason:
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
    return Reason(
        Code.AUTO_PAD,
        f"{node.op_type} '{node_label(node)}' uses auto_pad={auto_pad} with stride {list(stride)}: "
        "its padding depends on the input size; re-export with explicit pads",
    )


def _float_constant(node: onnx.NodeProto, role: str, constant: Constant) -> None:
    if not constant.is_float:
        raise malformed(node, f"has a {type_name(constant.elem_type)} {role} '{constant.name}' where a float tensor is needed")


def _describe_conv(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    _inputs(node, 2, 3)
    found = _leaf_constants(node, index, ("weight", "bias"))
    if isinstance(found, Reason):
        return found
    weight, bias = found
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
        if bias.shape != (weight.shape[0],):
            raise malformed(node, f"has a bias of shape {list(bias.shape)} for {weight.shape[0]} output channels")
    pads = resolve_pads(node, kernel, stride, dilation)
    if isinstance(pads, Reason):
        return pads
    return ConvLeaf(node.input[0], weight, bias, groups, stride, dilation, pads)


def _leaf_constants(node, index, roles: tuple[str, str]) -> tuple[Constant, Constant | None] | Reason:
    """The constant weight and optional bias (inputs 1 and 2) of a leaf node, checked."""
    weight = index.constant(node.input[1]) if node.input[1] else None
    if weight is None:
        return _non_constant(node, index, roles[0], node.input[1])
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = index.constant(node.input[2])
        if bias is None:
            return _non_constant(node, index, roles[1], node.input[2])
    if weight.elem_type not in FLOAT_TYPES:
        if weight.elem_type == onnx.TensorProto.BFLOAT16:
            return Reason(Code.DTYPE, f"{node.op_type} '{node_label(node)}' has bfloat16 weights, which qarep-onnx does not fold")
        _float_constant(node, roles[0], weight)
    if bias is not None and bias.elem_type != weight.elem_type:
        _float_constant(node, roles[1], bias)
        raise malformed(node, f"has a {type_name(bias.elem_type)} {roles[1]} and {type_name(weight.elem_type)} weights")
    return weight, bias


def _describe_conv_transpose(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    _inputs(node, 2, 3)
    found = _leaf_constants(node, index, ("weight", "bias"))
    if isinstance(found, Reason):
        return found
    weight, bias = found
    if len(weight.shape) < 3 or any(d < 1 for d in weight.shape):
        raise malformed(node, f"has a weight of shape {list(weight.shape)}; a ConvTranspose weight is [C, M/group, k1, ...]")
    rank = len(weight.shape) - 2
    kernel = tuple(weight.shape[2:])
    if ints_attribute(node, "kernel_shape", kernel) != kernel:
        raise malformed(node, f"declares a kernel_shape that is not its weight's {list(kernel)}")
    stride = ints_attribute(node, "strides", (1,) * rank, length=rank, minimum=1)
    dilation = ints_attribute(node, "dilations", (1,) * rank, length=rank, minimum=1)
    output_padding = ints_attribute(node, "output_padding", (0,) * rank, length=rank, minimum=0)
    groups = int_attribute(node, "group", 1, minimum=1)
    if weight.shape[0] % groups:
        raise malformed(node, f"has group={groups}, which does not divide its {weight.shape[0]} input channels")
    if bias is not None and bias.shape != (weight.shape[1] * groups,):
        raise malformed(node, f"has a bias of shape {list(bias.shape)} for {weight.shape[1] * groups} output channels")
    auto_pad = string_attribute(node, "auto_pad", "NOTSET") or "NOTSET"
    if auto_pad not in _AUTO_PADS:
        raise malformed(node, f"has auto_pad={auto_pad!r}; it must be one of {', '.join(_AUTO_PADS)}")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") or ints_attribute(node, "output_shape", ()):
        return Reason(
            Code.AUTO_PAD,
            f"ConvTranspose '{node_label(node)}' derives its padding from auto_pad={auto_pad} or output_shape; "
            "re-export with explicit pads",
        )
    pads = (0,) * (2 * rank) if auto_pad == "VALID" else ints_attribute(node, "pads", (0,) * (2 * rank), length=2 * rank, minimum=0)
    return ConvTransposeLeaf(node.input[0], weight, bias, groups, stride, dilation, pads, output_padding)


def _describe_dense(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    op = node.op_type
    _inputs(node, 2, 3 if op == "Gemm" else 2)
    if index.constant(node.input[0]) is not None:
        if index.constant(node.input[1]) is not None:
            return Reason(Code.CONSTANT_EXPRESSION, f"{op} '{node_label(node)}' only combines constants")
        return Reason(
            Code.BLOCKING_OP,
            f"{op} '{node_label(node)}' multiplies the tensor by a constant from the left (along its first axes), "
            "which no per-feature fold describes",
        )
    found = _leaf_constants(node, index, ("weight", "bias"))
    if isinstance(found, Reason):
        return found
    weight, bias = found
    if len(weight.shape) != 2 or any(d < 1 for d in weight.shape):
        if op == "MatMul":
            return Reason(Code.BLOCKING_OP, f"MatMul '{node_label(node)}' has a weight of shape {list(weight.shape)}; only 2-D weights fold")
        raise malformed(node, f"has a B of shape {list(weight.shape)}; Gemm takes a 2-D B")
    if op == "MatMul":
        return DenseLeaf(node.input[0], weight, None, op)
    trans_b = bool(int_attribute(node, "transB", 0))
    leaf = DenseLeaf(
        node.input[0], weight, bias, op, float_attribute(node, "alpha", 1.0), float_attribute(node, "beta", 1.0),
        bool(int_attribute(node, "transA", 0)), trans_b,
    )
    if bias is not None:
        n = leaf.out_features
        if bias.shape not in ((), (1,), (n,), (1, n), (1, 1)):
            return Reason(
                Code.NOT_PER_CHANNEL,
                f"Gemm '{node_label(node)}' adds a C of shape {list(bias.shape)}, which is not one value per output "
                f"feature ([{n}] or [1, {n}])",
            )
    return leaf


def _describe_pad(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    """A Pad a Conv can take over: constant mode, zero value, non-negative amounts (axes checked by the Conv)."""
    _inputs(node, 1, 4)
    label = f"Pad '{node_label(node)}'"
    mode = string_attribute(node, "mode", "constant")
    if mode != "constant":
        return Reason(Code.BLOCKING_OP, f"{label} pads in {mode} mode, which no Conv padding reproduces")
    if len(node.input) > 1 and node.input[1]:  # opset 11 and later: pads, constant_value and axes are inputs
        constants = [index.constant(n) if n else None for n in list(node.input[1:4])]
        computed = [n for n, c in zip(node.input[1:4], constants) if n and c is None]
        if computed:
            return Reason(Code.BLOCKING_OP, f"{label} takes '{computed[0]}' from a computed tensor, not a constant")
        pads = tuple(int(v) for v in constants[0].load().reshape(-1))
        value = 0.0
        if len(constants) > 1 and constants[1] is not None:
            values = constants[1].load().reshape(-1)
            value = float(values[0]) if values.size else 0.0
        axes = None
        if len(constants) > 2 and constants[2] is not None:
            axes = tuple(int(v) for v in constants[2].load().reshape(-1))
    else:
        pads = ints_attribute(node, "pads", ())
        value = float_attribute(node, "value", 0.0)
        axes = None
    if len(pads) % 2 or (axes is not None and len(pads) != 2 * len(axes)):
        raise malformed(node, f"has {len(pads)} pad amounts for {len(axes) if axes is not None else 'its'} axes")
    if value != 0.0:
        return Reason(Code.BLOCKING_OP, f"{label} pads with {value:g}, not zero: a Conv's own padding reads zeros")
    if any(p < 0 for p in pads):
        return Reason(Code.BLOCKING_OP, f"{label} crops (negative pads), which a Conv's padding cannot express")
    return ZeroPad(node.input[0], pads, axes)


def _describe_batch_norm(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    _inputs(node, 5, 5)
    if int_attribute(node, "training_mode", 0) or len([o for o in node.output if o]) > 1:
        return Reason(Code.BN_TRAINING, f"BatchNormalization '{node_label(node)}' runs in training mode")
    if not int_attribute(node, "spatial", 1):
        return Reason(Code.NOT_PER_CHANNEL, f"BatchNormalization '{node_label(node)}' has spatial=0 (statistics per position)")
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


def _describe_binary(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    a, b = node.input[0], node.input[1]
    ca, cb = index.constant(a), index.constant(b)
    op = node.op_type
    if ca is not None and cb is not None:
        return Reason(Code.CONSTANT_EXPRESSION, f"{op} '{node_label(node)}' only combines constants")
    if ca is None and cb is None:
        if op in ("Add", "Sub"):
            return Sum(((a, 1), (b, 1 if op == "Add" else -1)), ())
        return Reason(Code.NOT_LINEAR, f"{op} '{node_label(node)}' multiplies or divides two non-constant tensors")
    x, c, constant_first = (b, ca, True) if ca is not None else (a, cb, False)
    if op == "Mul":
        steps = (AffineStep("scale", (c,)),)
    elif op == "Add":
        steps = (AffineStep("shift", (c,)),)
    elif op == "Sub":
        steps = (AffineStep("negate"), AffineStep("shift", (c,))) if constant_first else (AffineStep("unshift", (c,)),)
    elif constant_first:  # Div(c, y)
        return Reason(Code.ENDS_BLOCK, f"Div '{node_label(node)}' divides a constant by the tensor")
    else:
        steps = (AffineStep("divide", (c,)),)
    return ChannelAffine(x, steps)


def _describe_sum(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    if not node.input:
        raise malformed(node, "has no inputs")
    terms = tuple((n, 1) for n in node.input if index.constant(n) is None)
    offsets = tuple((index.constant(n), 1) for n in node.input if index.constant(n) is not None)
    if not terms:
        return Reason(Code.CONSTANT_EXPRESSION, f"Sum '{node_label(node)}' only adds constants")
    if len(terms) == 1:
        return ChannelAffine(terms[0][0], tuple(AffineStep("shift", (c,)) for c, _ in offsets))
    return Sum(terms, offsets)


def _describe_average_pool(node: onnx.NodeProto) -> LinearOp | Reason:
    _inputs(node, 1, 1)
    kernel = ints_attribute(node, "kernel_shape", (), minimum=1)
    if not kernel:
        raise malformed(node, "has no kernel_shape")
    rank = len(kernel)
    stride = ints_attribute(node, "strides", (1,) * rank, length=rank, minimum=1)
    dilation = ints_attribute(node, "dilations", (1,) * rank, length=rank, minimum=1)
    pads = resolve_pads(node, kernel, stride, dilation)
    if isinstance(pads, Reason):
        return pads
    if any(pads) and not int_attribute(node, "count_include_pad", 0):
        return Reason(
            Code.POOL_EXCLUDES_PAD,
            f"AveragePool '{node_label(node)}' excludes padding from its mean (count_include_pad=0): "
            "its border weights differ from a convolution's",
        )
    if int_attribute(node, "ceil_mode", 0) and any(s > 1 for s in stride):
        return Reason(Code.POOL_CEIL_MODE, f"AveragePool '{node_label(node)}' uses ceil_mode with stride > 1")
    return AveragePoolLeaf(node.input[0], kernel, stride, dilation, pads)


def _describe_dropout(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    _inputs(node, 1, 3)
    mask = node.output[1] if len(node.output) > 1 else ""
    if mask and (index.consumer_nodes(mask) or mask in index.graph_outputs):
        return Reason(Code.NOT_LINEAR, f"Dropout '{node_label(node)}' has its mask used")
    if len(node.input) > 2 and node.input[2]:
        training = index.constant(node.input[2])
        if training is None or training.shape not in ((), (1,)) or bool(training.load().reshape(-1)[0]):
            return Reason(Code.NOT_LINEAR, f"Dropout '{node_label(node)}' may run in training mode")
    if int_attribute(node, "is_test", 1) == 0:  # opset < 7
        return Reason(Code.NOT_LINEAR, f"Dropout '{node_label(node)}' runs in training mode (is_test=0)")
    return Passthrough(node.input[0])


def describe(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    """The linear operation a node applies to conv-forms, or why it applies none."""
    if node.domain not in ("", "ai.onnx"):
        return Reason(Code.BLOCKING_OP, f"{node.domain}::{node.op_type} '{node_label(node)}' is a custom operator")
    try:
        return _describe(node, index)
    except Refused as refused:  # an attribute the function's caller supplies
        return refused.reason


def _describe(node: onnx.NodeProto, index: GraphIndex) -> LinearOp | Reason:
    op = node.op_type
    if op == "Conv":
        return _describe_conv(node, index)
    if op == "ConvTranspose":
        return _describe_conv_transpose(node, index)
    if op in ("Gemm", "MatMul"):
        return _describe_dense(node, index)
    if op == "Pad":
        return _describe_pad(node, index)
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
        return Reason(Code.BLOCKING_OP, f"{op} '{node_label(node)}' {_BLOCKING[op]}")
    return Reason(Code.ENDS_BLOCK, f"{op} '{node_label(node)}' is not linear")


def constant_axis(shape: tuple[int, ...], rank: int | None) -> int | None | Reason:
    """The one axis of a rank-``rank`` tensor along which a constant of ``shape`` varies once broadcast.

    ``None`` for a constant that is one value everywhere; :class:`Reason` when it varies along
    several axes, would raise the tensor's rank, or the rank is unknown.  Whether that axis is the
    tensor's channel axis is for the caller to judge (axis 1 for a Conv's output, the last axis for
    a MatMul's).
    """
    if all(d == 1 for d in shape) and (len(shape) <= 1 or (rank is not None and len(shape) <= rank)):
        return None  # one value, broadcast to anything without changing its shape
    if rank is None:
        return Reason(Code.NOT_PER_CHANNEL, f"a constant of shape {list(shape)} on a tensor of unknown rank")
    if len(shape) > rank:
        return Reason(Code.NOT_PER_CHANNEL, f"a constant of shape {list(shape)} that would raise the rank of a rank-{rank} tensor")
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    varying = [a for a, d in enumerate(padded) if d != 1]
    if len(varying) > 1:
        return Reason(
            Code.NOT_PER_CHANNEL,
            f"a constant of shape {list(shape)} that varies along axes {varying} of a rank-{rank} tensor, not along "
            "its channels alone",
        )
    return varying[0]
