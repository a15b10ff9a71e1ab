"""Convolutions: ``Conv(X, W[, B])`` with constant W and B, the leaf of nearly every block.

An ONNX Conv weight is already output-channel first, ``(M, C / group, k1, ...)``.  Branches merge
when their kernels can be centre-aligned (:func:`..algebra.merge_centre_aligned`), the identity
and AveragePool branches included; a merged weight that stays block-diagonal for more groups is
regrouped.  A zero Pad in front becomes the Conv's own padding, and a per-channel shift of the
input is exact only without padding (the border would read 0 where the shift gives ``s``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from ...errors import Code, Reason
from ...graph.attributes import (
    check_input_count,
    ints_attribute,
    malformed,
    node_label,
    string_attribute,
)
from ...graph.index import GraphIndex
from ...graph.tensors import Constant
from ...graph.walk import NameAllocator
from .. import algebra
from ..algebra import FormValues, Geometry
from .base import (
    Emitted,
    LeafKind,
    LeafOp,
    Shapes,
    convolution_attributes,
    leaf_constants,
    one_node,
    static,
)

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def resolve_pads(
    node: onnx.NodeProto, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]
) -> tuple[int, ...] | Reason:
    """Explicit pads of a Conv or AveragePool, resolving ``auto_pad`` where the input size does not matter."""
    rank = len(kernel)
    auto_pad = string_attribute(node, "auto_pad", "NOTSET") or "NOTSET"
    if auto_pad not in AUTO_PADS:
        raise malformed(node, f"has auto_pad={auto_pad!r}; it must be one of {', '.join(AUTO_PADS)}")
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


class ConvKind(LeafKind):
    label = "a Conv"
    op_types = ("Conv",)
    takes_zero_pad = True

    def describe(self, node: onnx.NodeProto, index: GraphIndex) -> ConvLeaf | Reason:
        check_input_count(node, 2, 3)
        found = leaf_constants(node, index)
        if isinstance(found, Reason):
            return found
        weight, bias = found
        kernel, stride, dilation, groups = convolution_attributes(node, weight, "[M, C/group, k1, ...]", "output")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise malformed(node, f"has a bias of shape {list(bias.shape)} for {weight.shape[0]} output channels")
        pads = resolve_pads(node, kernel, stride, dilation)
        if isinstance(pads, Reason):
            return pads
        return ConvLeaf(node.input[0], weight, bias, groups, stride, dilation, pads)

    def geometry(self, leaf: ConvLeaf) -> Geometry:
        return conv_geometry(leaf.weight.shape, leaf.groups, leaf.stride, leaf.dilation, leaf.pads)

    def pool_geometry(self, channels: int | None, kernel, stride, dilation, pads) -> Geometry:
        """An AveragePool as the depthwise convolution it is."""
        return Geometry(channels, channels, channels, tuple(kernel), tuple(stride), tuple(dilation), tuple(pads), self)

    def output_rank(self, leaf: ConvLeaf, index: GraphIndex) -> int:
        return len(leaf.weight.shape)

    def shift_reaches_every_output(self, geometry: Geometry) -> bool:
        return not any(geometry.pads)

    def merge(self, geometries: list[Geometry]) -> Geometry:
        return algebra.merge_centre_aligned(geometries, self)

    def values(self, leaf: ConvLeaf, geometry: Geometry) -> FormValues:
        return algebra.leaf_values(leaf.weight.load(), leaf.bias.load() if leaf.bias is not None else None, geometry)

    def finish(self, values: FormValues) -> FormValues:
        return algebra.regroup(values)

    def emit(self, values: FormValues, x: str, output: str, name: str, names: NameAllocator, rank: int | None) -> Emitted:
        g = values.geometry
        return one_node("Conv", x, output, name, names, values.weight, values.bias, kernel_shape=list(g.kernel),
                        strides=list(g.stride), dilations=list(g.dilation), pads=list(g.pads), group=int(g.groups))

    def flops(self, node: onnx.NodeProto, shapes: Shapes, weights: Shapes) -> int | None:
        weight = weights.get(node.input[1]) or static(shapes.get(node.input[1]))
        out = static(shapes.get(node.output[0]))
        if out is None or weight is None or static(shapes.get(node.input[0])) is None:
            return None
        return 2 * math.prod(weight[1:]) * math.prod(out)  # each output element reads C/g * k taps

    def weight_axis(self, node: onnx.NodeProto, rank: int) -> int | None:
        return 0 if rank >= 3 else None


CONV = ConvKind()


def conv_geometry(weight_shape: tuple[int, ...], groups: int, stride: tuple[int, ...], dilation: tuple[int, ...],
                  pads: tuple[int, ...]) -> Geometry:
    """The geometry of a convolution whose weight has ``weight_shape`` ``(M, C / groups, k1, ...)``."""
    cout, cin_per_group, *kernel = weight_shape
    return Geometry(cout, cin_per_group * groups, groups, tuple(kernel), tuple(stride), tuple(dilation), tuple(pads), CONV)


@dataclass(frozen=True)
class ConvLeaf(LeafOp):
    kind = CONV
    x: str
    weight: Constant
    bias: Constant | None
    groups: int
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[int, ...]
