"""What every kind of leaf operator (Conv, ConvTranspose, dense) provides, and what the three share.

A *leaf* starts a region: an operator ``y = L(X; W, b)`` whose weight is a constant.  Its *kind*
owns everything that differs between operator families, so that no code outside a kind asks
which family a form belongs to:

* reading an ONNX node into a leaf description, or saying why it is none (its ``describe`` methods,
  which the op table registers);
* its geometry, the axis its output channels lie on and the one its weight reads;
* how its weight becomes the numbers of the form (output-channel first, see :mod:`..algebra`) and
  back (:meth:`LeafKind.emit`, the ONNX nodes of a folded region);
* which branches of its kind sum into one operator (:meth:`LeafKind.merge`);
* whether a per-channel shift of its input reaches every output unchanged (what makes taking over
  ``L(t*X + s)`` exact);
* its FLOPs and, for INT8, the output-channel axis of its ONNX weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx

from ...errors import Code, Reason
from ...graph.attributes import int_attribute, ints_attribute, malformed, node_label
from ...graph.index import GraphIndex
from ...graph.tensors import FLOAT_TYPES, Constant, type_name
from ...graph.walk import NameAllocator
from .. import algebra
from ..algebra import FormValues, Geometry

Shapes = dict[str, tuple[int | None, ...]]


@dataclass
class Emitted:
    """The nodes a folded region becomes (the last one computes the region's output) and the new
    constants they read, in the order they are added to the graph."""

    nodes: list[onnx.NodeProto]
    constants: list[tuple[str, np.ndarray]] = field(default_factory=list)


def one_node(op_type: str, x: str, output: str, name: str, names: NameAllocator, weight: np.ndarray, bias: np.ndarray,
             **attributes) -> Emitted:
    """``op_type(x, weight, bias)``: the one node most folded regions become, with its new constants."""
    w_name, b_name = names.fresh(f"{name}.weight"), names.fresh(f"{name}.bias")
    node = onnx.helper.make_node(op_type, [x, w_name, b_name], [output], name=name, **attributes)
    return Emitted([node], [(b_name, bias), (w_name, weight)])


class LeafKind:
    """One family of linear operators; see the module docstring.  Subclasses fill in every method."""

    label: ClassVar[str]  # for messages: "a Conv"
    op_types: ClassVar[tuple[str, ...]]
    takes_zero_pad: ClassVar[bool] = False  # a zero Pad in front becomes its own padding
    input_words: ClassVar[str] = "its input channels"  # what its weight reads, for messages
    padding_words: ClassVar[str] = "pads"  # what makes a shift of its input inexact, for messages
    channels_last: ClassVar[bool] = False  # its data's channels on the last axis (dense), else on axis 1

    def geometry(self, leaf) -> Geometry:
        raise NotImplementedError

    def output_rank(self, leaf, index: GraphIndex) -> int | None:
        """The rank of the tensor the leaf computes."""
        raise NotImplementedError

    def channel_axis(self, rank: int | None) -> int | None:
        """The axis of a rank-``rank`` output its channels lie on (None when that needs an unknown rank)."""
        return 1

    def takes_input_affine(self, leaf) -> bool:
        """Whether a per-channel affine of its input can be folded into its weight at all."""
        return True

    def input_axis(self, leaf, rank: int | None) -> int | None:
        """The axis of its rank-``rank`` input its weight reads channel by channel; None when it reads
        none that a per-channel affine in front could act on."""
        return 1

    def shift_reaches_every_output(self, geometry: Geometry) -> bool:
        """Whether ``L(X + s) = L(X) + L(s)`` at every output: every output reads every tap from real input."""
        raise NotImplementedError

    def merge(self, geometries: list[Geometry]) -> Geometry:
        """The geometry of a sum of branches of this kind (and diagonal ones), or :class:`~qarep_onnx.errors.Refused`."""
        raise NotImplementedError

    def values(self, leaf, geometry: Geometry) -> FormValues:
        """The leaf's numbers, output-channel first."""
        raise NotImplementedError

    def finish(self, values: FormValues) -> FormValues:
        """The folded numbers in their cheapest exact layout (a Conv regroups a block-diagonal weight)."""
        return values

    def emitted_nodes(self, rank: int | None, has_bias: bool) -> int:
        """How many nodes a folded region of this kind becomes."""
        return 1

    def emit(self, values: FormValues, x: str, output: str, name: str, names: NameAllocator, rank: int | None) -> Emitted:
        """The ONNX nodes computing ``output`` from ``x`` with these numbers (in the model's float type);
        ``name`` is the node's, ``names`` hands out the new constants' names."""
        raise NotImplementedError

    def flops(self, node: onnx.NodeProto, shapes: Shapes, weights: Shapes) -> int | None:
        """FLOPs of one node of this kind from static shapes (2 per multiply-accumulate); None when unknown."""
        raise NotImplementedError

    def weight_axis(self, node: onnx.NodeProto, rank: int) -> int | None:
        """The axis of the node's ONNX weight (of rank ``rank``) that holds its output channels."""
        raise NotImplementedError


class LeafOp:
    """A leaf description's behaviour in a region: it starts a form, and its numbers come from its kind.

    ``operands`` of a leaf's form are the per-channel affines of its input it took over, nearest first.
    """

    kind: ClassVar[LeafKind]

    def grow(self, finder, i: int):
        return finder.grow_leaf(i, self)

    def evaluate(self, form, operands: list[FormValues], context) -> FormValues:
        values = self.kind.values(self, form.geometry)
        for affine in operands:
            values = algebra.input_affine(values, affine.weight.reshape(-1), affine.bias)
        return values


def static(shape: tuple[int | None, ...] | None) -> tuple[int, ...] | None:
    """A shape whose every dimension is known, or None."""
    return shape if shape is not None and None not in shape else None


def non_constant(node: onnx.NodeProto, index: GraphIndex, what: str, tensor: str) -> Reason:
    return Reason(
        Code.NON_CONSTANT,
        f"{what} '{tensor}' of {node.op_type} '{node_label(node)}' is not a constant: it {index.why_not_constant(tensor)}",
    )


def require_float(node: onnx.NodeProto, role: str, constant: Constant) -> None:
    """A float operand that is not a float tensor makes the node invalid ONNX."""
    if not constant.is_float:
        raise malformed(node, f"has a {type_name(constant.elem_type)} {role} '{constant.name}' where a float tensor is needed")


def convolution_attributes(node: onnx.NodeProto, weight: Constant, layout: str, channels: str):
    """Kernel, strides, dilations and group of a (transposed) convolution, checked against its weight.

    ``layout`` describes the weight's dims for a message (``[M, C/group, k1, ...]``), ``channels``
    says which channels its first dim counts.
    """
    if len(weight.shape) < 3 or any(d < 1 for d in weight.shape):
        raise malformed(node, f"has a weight of shape {list(weight.shape)}; its weight is {layout} with every dim >= 1")
    rank = len(weight.shape) - 2
    kernel = tuple(weight.shape[2:])
    declared = ints_attribute(node, "kernel_shape", kernel)
    if declared != kernel:
        raise malformed(node, f"declares kernel_shape {list(declared)} but its weight has kernel {list(kernel)}")
    stride = ints_attribute(node, "strides", (1,) * rank, length=rank, minimum=1)
    dilation = ints_attribute(node, "dilations", (1,) * rank, length=rank, minimum=1)
    groups = int_attribute(node, "group", 1, minimum=1)
    if weight.shape[0] % groups:
        raise malformed(node, f"has group={groups}, which does not divide its {weight.shape[0]} {channels} channels")
    return kernel, stride, dilation, groups


_INTEGERS = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
             onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


def unfolded_type(node: onnx.NodeProto, role: str, constant: Constant, integers: bool = False) -> Reason | None:
    """A valid element type the fold does not compute in (bfloat16; integers where the operator takes them):
    a reason to leave the node as it is.  Any other non-float type makes the node invalid ONNX."""
    if constant.elem_type == onnx.TensorProto.BFLOAT16 or (integers and constant.elem_type in _INTEGERS):
        return Reason(Code.DTYPE, f"{node.op_type} '{node_label(node)}' has {type_name(constant.elem_type).lower()} {role}, "
                                  "which qarep-onnx does not fold")
    require_float(node, role, constant)
    return None


def leaf_constants(node: onnx.NodeProto, index: GraphIndex, integers: bool = False) -> tuple[Constant, Constant | None] | Reason:
    """The constant weight and optional bias (inputs 1 and 2) of a leaf node, checked (``integers``: the
    operator takes integer tensors too, as Gemm and MatMul do)."""
    weight = index.constant(node.input[1]) if node.input[1] else None
    if weight is None:
        return non_constant(node, index, "weight", node.input[1])
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = index.constant(node.input[2])
        if bias is None:
            return non_constant(node, index, "bias", node.input[2])
    if weight.elem_type not in FLOAT_TYPES:
        return unfolded_type(node, "weights", weight, integers)
    if bias is not None and bias.elem_type != weight.elem_type:
        require_float(node, "bias", bias)
        raise malformed(node, f"has a {type_name(bias.elem_type)} bias and {type_name(weight.elem_type)} weights")
    return weight, bias
