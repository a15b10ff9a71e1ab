"""The INT8 op table: what each op type means to placement and equalization, in one place.

Every other module of the INT8 package asks this table instead of naming op types itself.

* **Layers**: the weighted ops TensorRT runs in int8 when their data input and weight carry Q/DQ:
  the leaf operators of the fold's op table (:data:`qarep_onnx.fold.ops.LEAF_OPS`), whose kinds say
  which weight axis holds the output channels and whether the data keeps its channels on axis 1
  (convolutions, NCHW) or on the last axis (dense ops).
* **Int8 flow** (:data:`FLOW`): ops TensorRT can run in int8 between quantized layers when Q/DQ
  sits on their inputs (pooling, Concat, Resize, reshape-like ops).  ``shares_scale``: the op only
  moves or selects values (max, concatenation, nearest resize, reshapes), so its inputs take the
  scale of its output and the int8 values pass through unchanged; the others (averaging,
  interpolation) compute new values, which TensorRT quantizes again.
* **Residual** (:data:`RESIDUAL`): an element-wise sum TensorRT fuses into the layer that computes
  one of its operands, when the other operand (the skip connection) is quantized.
* **Positively homogeneous** (:data:`HOMOGENEOUS`): ``f(s x) = s f(x)`` for every ``s > 0``, per
  element (Relu, LeakyRelu, PRelu; Clip only when its lower bound is 0 and it has no upper bound).
  Equalization may move a per-channel scale through them; never through SiLU, GELU, Sigmoid or a
  clip with a non-zero bound, where the identity fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..graph.attributes import string_attribute


@dataclass(frozen=True)
class FlowOp:
    shares_scale: bool  # values pass through unchanged (their inputs use the output's scale)
    data_inputs: int = 1  # how many leading inputs carry data (-1: all, as Concat)


FLOW: dict[str, FlowOp] = {
    "MaxPool": FlowOp(shares_scale=True),
    "AveragePool": FlowOp(shares_scale=False),
    "GlobalAveragePool": FlowOp(shares_scale=False),
    "GlobalMaxPool": FlowOp(shares_scale=True),
    "Concat": FlowOp(shares_scale=True, data_inputs=-1),
    "Resize": FlowOp(shares_scale=False),  # nearest mode shares: see flow_shares_scale
    "Upsample": FlowOp(shares_scale=False),
    "Reshape": FlowOp(shares_scale=True),
    "Flatten": FlowOp(shares_scale=True),
    "Squeeze": FlowOp(shares_scale=True),
    "Unsqueeze": FlowOp(shares_scale=True),
    "Transpose": FlowOp(shares_scale=True),
}

RESIDUAL = frozenset({"Add"})

HOMOGENEOUS = frozenset({"Relu", "LeakyRelu", "PRelu", "Clip"})

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def flow_data_inputs(node: onnx.NodeProto) -> list[int]:
    """The input slots of a flow op that carry data (Resize's scales and sizes, Reshape's shape do not)."""
    rule = FLOW[node.op_type]
    if rule.data_inputs < 0:
        return [k for k, name in enumerate(node.input) if name]
    return [k for k in range(min(rule.data_inputs, len(node.input))) if node.input[k]]


def flow_shares_scale(node: onnx.NodeProto) -> bool:
    """True when the op passes int8 values through unchanged (Resize only in nearest mode)."""
    if node.op_type in ("Resize", "Upsample"):
        return string_attribute(node, "mode", "nearest") == "nearest"
    return FLOW[node.op_type].shares_scale
