"""Dense layers: ``Gemm(X, B[, C])`` and ``MatMul(X, B)`` with a constant 2-D ``B``, over the last axis.

``y[..., o] = sum_c W[o, c] X[..., c] + b[o]`` is a 1x1 convolution over the feature axis: the
form holds ``W`` as ``(out, in)`` (Gemm's ``alpha`` folded in, ``B`` transposed unless ``transB``)
and ``b = beta * C``.  Its channels are on the last axis, so a constant of shape ``[C]`` acts per
feature, and every output reads every input feature: a per-feature affine in front always folds
in.  A folded region is one Gemm on a 2-D input, else a MatMul followed by an Add of its bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ...errors import Code, Reason, Refused
from ...graph.attributes import (
    check_input_count,
    float_attribute,
    int_attribute,
    malformed,
    node_label,
)
from ...graph.index import GraphIndex
from ...graph.tensors import Constant
from ...graph.walk import NameAllocator
from .. import algebra
from ..algebra import FormValues, Geometry
from .base import Emitted, LeafKind, LeafOp, Shapes, leaf_constants, one_node, static


class DenseKind(LeafKind):
    label = "a Gemm/MatMul"
    op_types = ("Gemm", "MatMul")
    input_words = "its features"
    channels_last = True

    def describe_gemm(self, node: onnx.NodeProto, index: GraphIndex) -> DenseLeaf | Reason:
        found = self._constants(node, index, most_inputs=3)
        if isinstance(found, Reason):
            return found
        weight, bias = found
        if len(weight.shape) != 2 or any(d < 1 for d in weight.shape):
            raise malformed(node, f"has a B of shape {list(weight.shape)}; Gemm takes a 2-D B")
        trans_b = bool(int_attribute(node, "transB", 0))
        leaf = DenseLeaf(
            node.input[0], weight, bias, True, float_attribute(node, "alpha", 1.0), float_attribute(node, "beta", 1.0),
            bool(int_attribute(node, "transA", 0)), trans_b,
        )
        n = leaf.out_features
        if bias is not None and bias.shape not in ((), (1,), (n,), (1, n), (1, 1)):
            return Reason(
                Code.NOT_PER_CHANNEL,
                f"Gemm '{node_label(node)}' adds a C of shape {list(bias.shape)}, which is not one value per output "
                f"feature ([{n}] or [1, {n}])",
            )
        return leaf

    def describe_matmul(self, node: onnx.NodeProto, index: GraphIndex) -> DenseLeaf | Reason:
        found = self._constants(node, index, most_inputs=2)
        if isinstance(found, Reason):
            return found
        weight, _ = found
        if len(weight.shape) != 2 or any(d < 1 for d in weight.shape):
            return Reason(Code.BLOCKING_OP, f"MatMul '{node_label(node)}' has a weight of shape {list(weight.shape)}; only 2-D weights fold")
        return DenseLeaf(node.input[0], weight, None, False)

    def _constants(self, node: onnx.NodeProto, index: GraphIndex, most_inputs: int):
        check_input_count(node, 2, most_inputs)
        op = node.op_type
        if index.constant(node.input[0]) is not None:
            if index.constant(node.input[1]) is not None:
                return Reason(Code.CONSTANT_EXPRESSION, f"{op} '{node_label(node)}' only combines constants")
            return Reason(
                Code.BLOCKING_OP,
                f"{op} '{node_label(node)}' multiplies the tensor by a constant from the left (along its first axes), "
                "which no per-feature fold describes",
            )
        return leaf_constants(node, index, integers=True)

    def geometry(self, leaf: DenseLeaf) -> Geometry:
        return dense_geometry(leaf.out_features, leaf.in_features, leaf.trans_a)

    def output_rank(self, leaf: DenseLeaf, index: GraphIndex) -> int | None:
        return 2 if leaf.two_dimensional else index.rank(leaf.x)

    def channel_axis(self, rank: int | None) -> int | None:
        return None if rank is None else rank - 1

    def takes_input_affine(self, leaf: DenseLeaf) -> bool:
        return not leaf.trans_a  # with transA the features are on the input's first axis: no per-feature affine

    def input_axis(self, leaf: DenseLeaf, rank: int | None) -> int | None:
        return None if rank is None else rank - 1

    def shift_reaches_every_output(self, geometry: Geometry) -> bool:
        return True

    def merge(self, geometries: list[Geometry]) -> Geometry:
        """Gemm/MatMul branches (and the identity, when features in == out) over the same X."""
        out, cin = algebra.channel_sets(geometries)
        if any(g.is_diagonal for g in geometries) and out is not None and cin is not None and out != cin:
            raise Refused(Reason(Code.CHANNEL_MISMATCH, f"an identity term needs as many output features as input ({out} != {cin})"))
        dense = [g for g in geometries if not g.is_diagonal]
        if len({g.transposed_input for g in dense}) > 1 or (dense[0].transposed_input and len(dense) < len(geometries)):
            raise Refused(Reason(Code.MISALIGNED, "branches read the input along different axes (Gemm transA differs)"))
        return dense_geometry(out, cin, dense[0].transposed_input)

    def values(self, leaf: DenseLeaf, geometry: Geometry) -> FormValues:
        # Gemm: alpha * X W' + beta * C, W' = B (transB) or B^T; MatMul: X B.
        b_matrix = leaf.weight.load()
        weight = b_matrix if leaf.trans_b else b_matrix.T
        if leaf.alpha != 1.0:
            weight = weight * np.float64(leaf.alpha)
        out = weight.shape[0]
        if leaf.bias is None:
            bias = np.zeros(out)
        else:
            bias = np.broadcast_to(np.asarray(leaf.bias.load(), np.float64).reshape(-1), (out,)) * leaf.beta
        return FormValues(weight, np.array(bias, np.float64), geometry)

    def emitted_nodes(self, rank: int | None, has_bias: bool) -> int:
        return 2 if rank != 2 and has_bias else 1

    def emit(self, values: FormValues, x: str, output: str, name: str, names: NameAllocator, rank: int | None) -> Emitted:
        weight, bias = values.weight, values.bias
        if rank == 2:
            attributes = {"transB": 1} | ({"transA": 1} if values.geometry.transposed_input else {})
            return one_node("Gemm", x, output, name, names, weight, bias, **attributes)
        w_name = names.fresh(f"{name}.weight")
        if not np.any(bias != 0):
            node = helper.make_node("MatMul", [x, w_name], [output], name=name)
            return Emitted([node], [(w_name, np.ascontiguousarray(weight.T))])
        product = names.fresh(f"{name}.product")
        matmul = helper.make_node("MatMul", [x, w_name], [product], name=names.fresh(f"{name}.matmul"))
        b_name = names.fresh(f"{name}.bias")
        add = helper.make_node("Add", [product, b_name], [output], name=name)
        return Emitted([matmul, add], [(w_name, np.ascontiguousarray(weight.T)), (b_name, bias)])

    def flops(self, node: onnx.NodeProto, shapes: Shapes, weights: Shapes) -> int | None:
        a = static(shapes.get(node.input[0]))
        out = static(shapes.get(node.output[0]))
        if out is None or a is None:
            return None
        transposed = any(t.name == "transA" and t.i for t in node.attribute)  # Gemm only; MatMul has no attributes
        return 2 * math.prod(out) * (a[0] if transposed else a[-1])

    def weight_axis(self, node: onnx.NodeProto, rank: int) -> int | None:
        if rank != 2:
            return None
        return 0 if int_attribute(node, "transB", 0) else 1


DENSE = DenseKind()


def dense_geometry(out_features: int | None, in_features: int | None, transposed_input: bool = False) -> Geometry:
    """``y[..., o] = sum_c W[o, c] X[..., c] + b[o]``: a Gemm or a MatMul with a constant weight."""
    return Geometry(out_features, in_features, 1, (), (), (), (), DENSE, (), transposed_input)


@dataclass(frozen=True)
class DenseLeaf(LeafOp):
    """``alpha * X' W' + beta * C`` (Gemm) or ``X W`` (MatMul) with constant weights."""

    kind = DENSE
    x: str
    weight: Constant  # B
    bias: Constant | None  # C
    two_dimensional: bool  # a Gemm: its input and output are 2-D
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
