"""THE op table: for each ONNX operator, what it does to a linear form, or why it does nothing.

:data:`OPS` maps an op type to its :class:`Rule`: the function that reads a node into a leaf or a
:mod:`.linear_ops` description (or a :class:`~qarep_onnx.errors.Reason` it is none), its
:class:`Role`, and the facts other parts of the tool need about it: which inputs hold weights
(validation perturbs them), its FLOPs per output element, whether the summary table shows it.
Every op list elsewhere (the ops a second pass looks for, the layer ops of INT8, the FLOPs sets,
the summary's rows) derives from this table: adding an operator to the fold is one entry here
and its reader.

An operator that is not in the table is not linear: a Relu, say, ends a block (code
``ENDS_BLOCK``, never reported).  Every attribute and input a fold would read is checked where it
is read: a node that is not valid ONNX raises :class:`~qarep_onnx.errors.InputModelError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

import numpy as np
import onnx

from ..errors import Code, Reason, Refused
from ..graph.attributes import (
    check_input_count,
    float_attribute,
    int_attribute,
    ints_attribute,
    malformed,
    node_label,
    string_attribute,
)
from ..graph.index import GraphIndex
from ..graph.tensors import FLOAT_TYPES, Constant
from .kinds.base import LeafKind, non_constant, unfolded_type
from .kinds.conv import CONV, resolve_pads
from .kinds.conv_transpose import CONV_TRANSPOSE
from .kinds.dense import DENSE
from .linear_ops import (
    AveragePool,
    BatchNorm,
    ChannelAffine,
    Divide,
    Negate,
    Passthrough,
    Relayout,
    Scale,
    Shift,
    Sum,
    ZeroPad,
)

Description = object  # a leaf (kinds) or a linear_ops description
Reader = Callable[[onnx.NodeProto, GraphIndex], "Description | Reason"]


class Role(Enum):
    LEAF = "starts a region: a linear operator with a constant weight"
    AFFINE = "a per-channel affine of one operand"
    SUM = "a weighted sum of operands (an affine when all but one are constants)"
    PASS = "its operand, unchanged"
    LAYOUT = "its operand's numbers in another layout (a per-channel affine in front of it moves behind it)"
    PAD = "zeros around its operand, which a Conv reading it takes as its own padding"
    POOL = "a fixed depthwise kernel over its operand: a branch, not a leaf"
    BLOCKING = "linear, but no fold describes it: a block containing it is refused"
    ENDS = "not linear: a block ends here"


class Row(Enum):
    """Whether the summary's before/after table shows the operator."""

    ALWAYS = "always"
    IF_PRESENT = "when the model has one, before or after"
    NEVER = "never"


@dataclass(frozen=True)
class Rule:
    role: Role
    read: Reader
    weight_inputs: tuple[int, ...] | None = ()  # inputs that hold weights (None: all of them)
    flops_per_element: int = 0  # FLOPs per output element; a leaf's own kind counts its FLOPs
    row: Row = Row.NEVER
    kind: LeafKind | None = None
    reports_unfoldable: bool = False  # a leaf that cannot start a region is reported when a linear op reads it


# -- readers -------------------------------------------------------------------------------------------


def ends_block(node: onnx.NodeProto, index: GraphIndex | None = None) -> Reason:
    return Reason(Code.ENDS_BLOCK, f"{node.op_type} '{node_label(node)}' is not linear")


def _blocking(what: str) -> Reader:
    return lambda node, index: Reason(Code.BLOCKING_OP, f"{node.op_type} '{node_label(node)}' {what}")


def _read_batch_norm(node: onnx.NodeProto, index: GraphIndex) -> ChannelAffine | Reason:
    check_input_count(node, 5, 5)
    if int_attribute(node, "training_mode", 0) or len([o for o in node.output if o]) > 1:
        return Reason(Code.BN_TRAINING, f"BatchNormalization '{node_label(node)}' runs in training mode")
    if not int_attribute(node, "spatial", 1):
        return Reason(Code.NOT_PER_CHANNEL, f"BatchNormalization '{node_label(node)}' has spatial=0 (statistics per position)")
    epsilon = float_attribute(node, "epsilon", 1e-5)
    values = []
    for role, name in zip(("scale", "bias", "mean", "var"), node.input[1:5]):
        constant = index.constant(name)
        if constant is None:
            return non_constant(node, index, role, name)
        if constant.elem_type not in FLOAT_TYPES:
            return unfolded_type(node, f"{role} parameters", constant)
        values.append(constant)
    shapes = {c.shape for c in values}
    if len(shapes) > 1 or len(next(iter(shapes))) != 1:
        raise malformed(node, f"has parameters of shapes {[list(c.shape) for c in values]}; each must be [C]")
    return ChannelAffine(node.input[0], (BatchNorm(tuple(values), epsilon),))


def _binary(both_tensors: Callable, with_constant: Callable) -> Reader:
    """The reader of a two-input arithmetic node: ``both_tensors(node)`` when neither operand is a constant,
    ``with_constant(node, x, c, constant_first)`` when one is."""

    def read(node: onnx.NodeProto, index: GraphIndex):
        if len(node.input) != 2:
            return ends_block(node)
        a, b = node.input
        ca, cb = index.constant(a), index.constant(b)
        if ca is not None and cb is not None:
            return Reason(Code.CONSTANT_EXPRESSION, f"{node.op_type} '{node_label(node)}' only combines constants")
        if ca is None and cb is None:
            return both_tensors(node)
        return with_constant(node, b, ca, True) if ca is not None else with_constant(node, a, cb, False)

    return read


def _sum_of_two(sign: float) -> Callable:
    return lambda node: Sum(((node.input[0], 1.0), (node.input[1], sign)), ())


def _product_of_two(node: onnx.NodeProto) -> Reason:
    return Reason(Code.NOT_LINEAR, f"{node.op_type} '{node_label(node)}' multiplies or divides two non-constant tensors")


def _scale(node, x, c, constant_first) -> ChannelAffine:
    return ChannelAffine(x, (Scale((c,)),))


def _divide(node, x, c, constant_first) -> ChannelAffine | Reason:
    if constant_first:
        return Reason(Code.ENDS_BLOCK, f"Div '{node_label(node)}' divides a constant by the tensor")
    return ChannelAffine(x, (Divide((c,)),))


def _shift(node, x, c, constant_first) -> ChannelAffine:
    return ChannelAffine(x, (Shift((c,)),))


def _subtract(node, x, c, constant_first) -> ChannelAffine:
    return ChannelAffine(x, (Negate(), Shift((c,))) if constant_first else (Shift((c,), subtract=True),))


_read_mul = _binary(_product_of_two, _scale)
_read_div = _binary(_product_of_two, _divide)
_read_add = _binary(_sum_of_two(1.0), _shift)
_read_sub = _binary(_sum_of_two(-1.0), _subtract)


def _weighted_sum(node: onnx.NodeProto, index: GraphIndex, coefficient: float) -> ChannelAffine | Sum | Reason:
    """``coefficient * (the sum of the inputs)``: a Sum of the tensors among them, or an affine of the one tensor."""
    if not node.input:
        raise malformed(node, "has no inputs")
    terms = tuple((n, coefficient) for n in node.input if index.constant(n) is None)
    offsets = tuple((index.constant(n), coefficient) for n in node.input if index.constant(n) is not None)
    if not terms:
        return Reason(Code.CONSTANT_EXPRESSION, f"{node.op_type} '{node_label(node)}' only combines constants")
    if len(terms) > 1:
        return Sum(terms, offsets)
    steps = tuple(Shift((c,)) for c, _ in offsets)
    if coefficient != 1.0:
        factor = Constant(f"{node_label(node)}: 1/{len(node.input)}", (), onnx.TensorProto.DOUBLE,
                          lambda: np.array(coefficient))
        steps += (Scale((factor,)),)
    return ChannelAffine(terms[0][0], steps)


def _read_sum(node: onnx.NodeProto, index: GraphIndex) -> ChannelAffine | Sum | Reason:
    return _weighted_sum(node, index, 1.0)


def _read_mean(node: onnx.NodeProto, index: GraphIndex) -> ChannelAffine | Sum | Reason:
    """The mean of branches over one input: their sum, scaled by ``1/n``."""
    return _weighted_sum(node, index, 1.0 / max(len(node.input), 1))


def _read_layout(node: onnx.NodeProto, index: GraphIndex) -> Relayout | Reason:
    return Relayout(node.input[0]) if node.input and node.input[0] else ends_block(node)


def _read_neg(node: onnx.NodeProto, index: GraphIndex) -> ChannelAffine | Reason:
    return ChannelAffine(node.input[0], (Negate(),)) if len(node.input) == 1 else ends_block(node)


def _read_identity(node: onnx.NodeProto, index: GraphIndex) -> Passthrough | Reason:
    return Passthrough(node.input[0]) if len(node.input) == 1 else ends_block(node)


def _read_dropout(node: onnx.NodeProto, index: GraphIndex) -> Passthrough | Reason:
    check_input_count(node, 1, 3)
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


def _read_average_pool(node: onnx.NodeProto, index: GraphIndex) -> AveragePool | Reason:
    check_input_count(node, 1, 1)
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
    return AveragePool(node.input[0], kernel, stride, dilation, pads)


def _read_pad(node: onnx.NodeProto, index: GraphIndex) -> ZeroPad | Reason:
    """A Pad a Conv can take over: constant mode, zero value, non-negative amounts (axes checked by the Conv)."""
    check_input_count(node, 1, 4)
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


# -- the table -------------------------------------------------------------------------------------------
# The summary table shows its rows in this order.

OPS: dict[str, Rule] = {
    "Conv": Rule(Role.LEAF, CONV.describe, (1, 2), row=Row.ALWAYS, kind=CONV, reports_unfoldable=True),
    "BatchNormalization": Rule(Role.AFFINE, _read_batch_norm, (1, 2, 3, 4), 2, Row.ALWAYS),
    "Add": Rule(Role.SUM, _read_add, (0, 1), 1, Row.ALWAYS),
    "Mul": Rule(Role.AFFINE, _read_mul, (0, 1), 1, Row.ALWAYS),
    "ConvTranspose": Rule(Role.LEAF, CONV_TRANSPOSE.describe, (1, 2), row=Row.IF_PRESENT, kind=CONV_TRANSPOSE,
                          reports_unfoldable=True),
    "Gemm": Rule(Role.LEAF, DENSE.describe_gemm, (0, 1, 2), row=Row.IF_PRESENT, kind=DENSE, reports_unfoldable=True),
    # Not reported when it cannot start a region: in attention, MatMul of two activations is common and no fold.
    "MatMul": Rule(Role.LEAF, DENSE.describe_matmul, (0, 1), row=Row.IF_PRESENT, kind=DENSE),
    "Div": Rule(Role.AFFINE, _read_div, (0, 1), 1, Row.IF_PRESENT),
    "Sub": Rule(Role.SUM, _read_sub, (0, 1), 1, Row.IF_PRESENT),
    "Pad": Rule(Role.PAD, _read_pad, row=Row.IF_PRESENT),
    "Sum": Rule(Role.SUM, _read_sum, None, 1),
    "Mean": Rule(Role.SUM, _read_mean, None, 1),
    "Neg": Rule(Role.AFFINE, _read_neg),
    "Identity": Rule(Role.PASS, _read_identity),
    "Dropout": Rule(Role.PASS, _read_dropout),
    "Reshape": Rule(Role.LAYOUT, _read_layout),
    "Flatten": Rule(Role.LAYOUT, _read_layout),
    "Squeeze": Rule(Role.LAYOUT, _read_layout),
    "Unsqueeze": Rule(Role.LAYOUT, _read_layout),
    "AveragePool": Rule(Role.POOL, _read_average_pool),
    "Cast": Rule(Role.BLOCKING, _blocking("changes the element type")),
    "QuantizeLinear": Rule(Role.BLOCKING, _blocking("quantizes")),
    "DequantizeLinear": Rule(Role.BLOCKING, _blocking("dequantizes")),
    "Slice": Rule(Role.BLOCKING, _blocking("crops (cropping branches are not folded)")),
    # Not linear, but their weights are weights: validation perturbs them to measure the model's noise.
    "InstanceNormalization": Rule(Role.ENDS, ends_block, (1, 2)),
    "LayerNormalization": Rule(Role.ENDS, ends_block, (1, 2)),
    "GroupNormalization": Rule(Role.ENDS, ends_block, (1, 2)),
    "PRelu": Rule(Role.ENDS, ends_block, (1,)),
}

# Operators a leaf can take over in front of it, or that extend a form: a fold that leaves one of
# them with a single reader may let another pass fold more.
TAKEN_OVER = frozenset(op for op, rule in OPS.items() if rule.role in (Role.AFFINE, Role.SUM, Role.PASS, Role.LAYOUT, Role.PAD))
# Operators whose node is one leaf operator: INT8's layers, the FLOPs of matrix products.
LEAF_OPS = tuple(op for op, rule in OPS.items() if rule.kind is not None)
WEIGHT_INPUTS = {op: rule.weight_inputs for op, rule in OPS.items() if rule.weight_inputs != ()}
SUMMARY_ROWS = tuple(op for op, rule in OPS.items() if rule.row is Row.ALWAYS)
SUMMARY_ROWS_IF_PRESENT = tuple(op for op, rule in OPS.items() if rule.row is Row.IF_PRESENT)


def rule(op_type: str) -> Rule:
    """The rule of an op type of the default domain; an operator the table does not know ends a block."""
    return OPS.get(op_type) or _ENDS


_ENDS = Rule(Role.ENDS, ends_block)


def describe(node: onnx.NodeProto, index: GraphIndex) -> Description | Reason:
    """The leaf or linear operation a node applies to forms, or why it applies none."""
    if node.domain not in ("", "ai.onnx"):
        return Reason(Code.BLOCKING_OP, f"{node.domain}::{node.op_type} '{node_label(node)}' is a custom operator")
    try:
        return rule(node.op_type).read(node, index)
    except Refused as refused:  # an attribute the function's caller supplies
        return refused.reason
