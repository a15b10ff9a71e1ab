"""Transposed convolutions: ``ConvTranspose(X, W[, B])`` with constant W and B (decoders, upsampling heads).

ONNX lays a ConvTranspose weight out input-channel first, ``(C, M / group, k1, ...)``; the form holds
it output-channel first like every other kind, and :func:`to_output_first` / :func:`to_onnx` are
the two directions of that one relayout.  A transposed convolution scatters each input position
over its kernel, so two of them sum into one only when they are laid out identically, and a
per-channel shift of the input reaches every output only for a 1x1 kernel without stride or pads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from ...errors import Code, Reason, Refused
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
from .conv import AUTO_PADS


def to_output_first(weight: np.ndarray, groups: int) -> np.ndarray:
    """ONNX's ``(in, out / groups, *kernel)`` as ``(out, in / groups, *kernel)``."""
    cin, cout_per_group, *kernel = weight.shape
    grouped = weight.reshape(groups, cin // groups, cout_per_group, *kernel).swapaxes(1, 2)
    return grouped.reshape(groups * cout_per_group, cin // groups, *kernel)


def to_onnx(weight: np.ndarray, groups: int) -> np.ndarray:
    """``(out, in / groups, *kernel)`` back to ONNX's ``(in, out / groups, *kernel)``."""
    cout, cin_per_group, *kernel = weight.shape
    grouped = weight.reshape(groups, cout // groups, cin_per_group, *kernel).swapaxes(1, 2)
    return np.ascontiguousarray(grouped.reshape(groups * cin_per_group, cout // groups, *kernel))


class ConvTransposeKind(LeafKind):
    label = "a ConvTranspose"
    op_types = ("ConvTranspose",)
    padding_words = "kernel, stride or pads"

    def describe(self, node: onnx.NodeProto, index: GraphIndex) -> ConvTransposeLeaf | Reason:
        check_input_count(node, 2, 3)
        found = leaf_constants(node, index)
        if isinstance(found, Reason):
            return found
        weight, bias = found
        kernel, stride, dilation, groups = convolution_attributes(node, weight, "[C, M/group, k1, ...]", "input")
        rank = len(kernel)
        output_padding = ints_attribute(node, "output_padding", (0,) * rank, length=rank, minimum=0)
        if bias is not None and bias.shape != (weight.shape[1] * groups,):
            raise malformed(node, f"has a bias of shape {list(bias.shape)} for {weight.shape[1] * groups} output channels")
        auto_pad = string_attribute(node, "auto_pad", "NOTSET") or "NOTSET"
        if auto_pad not in AUTO_PADS:
            raise malformed(node, f"has auto_pad={auto_pad!r}; it must be one of {', '.join(AUTO_PADS)}")
        if auto_pad in ("SAME_UPPER", "SAME_LOWER") or ints_attribute(node, "output_shape", ()):
            return Reason(
                Code.AUTO_PAD,
                f"ConvTranspose '{node_label(node)}' derives its padding from auto_pad={auto_pad} or output_shape; "
                "re-export with explicit pads",
            )
        pads = (0,) * (2 * rank) if auto_pad == "VALID" else ints_attribute(node, "pads", (0,) * (2 * rank), length=2 * rank, minimum=0)
        return ConvTransposeLeaf(node.input[0], weight, bias, groups, stride, dilation, pads, output_padding)

    def geometry(self, leaf: ConvTransposeLeaf) -> Geometry:
        cin, cout_per_group, *kernel = leaf.weight.shape
        return Geometry(cout_per_group * leaf.groups, cin, leaf.groups, tuple(kernel), leaf.stride, leaf.dilation,
                        leaf.pads, self, tuple(leaf.output_padding))

    def output_rank(self, leaf: ConvTransposeLeaf, index: GraphIndex) -> int:
        return len(leaf.weight.shape)

    def shift_reaches_every_output(self, geometry: Geometry) -> bool:
        return (all(k == 1 for k in geometry.kernel) and all(s == 1 for s in geometry.stride)
                and not any(geometry.pads) and not any(geometry.output_padding))

    def merge(self, geometries: list[Geometry]) -> Geometry:
        algebra.channel_sets(geometries)
        if any(g.is_diagonal for g in geometries) or len(set(geometries)) > 1:
            raise Refused(Reason(Code.MISALIGNED,
                                 "transposed convolutions are merged only with branches of exactly the same geometry"))
        return geometries[0]

    def values(self, leaf: ConvTransposeLeaf, geometry: Geometry) -> FormValues:
        bias = leaf.bias.load() if leaf.bias is not None else None
        return algebra.leaf_values(to_output_first(leaf.weight.load(), leaf.groups), bias, geometry)

    def emit(self, values: FormValues, x: str, output: str, name: str, names: NameAllocator, rank: int | None) -> Emitted:
        g = values.geometry
        return one_node("ConvTranspose", x, output, name, names, to_onnx(values.weight, g.groups), values.bias,
                        kernel_shape=list(g.kernel), strides=list(g.stride), dilations=list(g.dilation), pads=list(g.pads),
                        output_padding=list(g.output_padding), group=int(g.groups))

    def flops(self, node: onnx.NodeProto, shapes: Shapes, weights: Shapes) -> int | None:
        weight = weights.get(node.input[1]) or static(shapes.get(node.input[1]))
        x = static(shapes.get(node.input[0]))
        if static(shapes.get(node.output[0])) is None or weight is None or x is None:
            return None
        return 2 * math.prod(weight[1:]) * math.prod(x)  # each input element writes M/g * k taps

    def weight_axis(self, node: onnx.NodeProto, rank: int) -> int | None:
        return 1 if rank >= 3 else None


CONV_TRANSPOSE = ConvTransposeKind()


@dataclass(frozen=True)
class ConvTransposeLeaf(LeafOp):
    kind = CONV_TRANSPOSE
    x: str
    weight: Constant  # ONNX layout (in, out / groups, *kernel)
    bias: Constant | None
    groups: int
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[int, ...]
    output_padding: tuple[int, ...]
