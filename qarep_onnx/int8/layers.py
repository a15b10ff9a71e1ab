"""The layers INT8 is about: the weighted nodes of the main graph, their weights and channel axes.

A *layer* is a Conv, ConvTranspose, Gemm or MatMul whose weight is a constant initializer (after
:mod:`.prepare` has resolved ``Constant`` nodes and ``Identity`` aliases) and whose data input is
not.  These are the nodes TensorRT runs in int8 when their inputs carry Q/DQ, and the nodes whose
names ``--exclude`` takes.  The weight's output-channel axis (one int8 scale each) and
input-channel axis (what equalization scales):

* Conv: weight ``[M, C/g, k...]``, output axis 0, input axis 1;
* ConvTranspose: weight ``[C, M/g, k...]``, output axis 1, input axis 0;
* Gemm: ``B`` is ``[N, K]`` with ``transB=1`` (output axis 0) and ``[K, N]`` without (output axis 1);
* MatMul with a 2-D constant ``B`` ``[K, N]``: output axis 1, input axis 0.

Only the main graph is searched: layers inside If/Loop/Scan bodies or functions are not quantized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..fold.ops import LEAF_OPS, rule
from ..graph.attributes import int_attribute
from ..graph.tensors import FLOAT_TYPES, tensor_values

LAYER_OPS = LEAF_OPS


@dataclass(frozen=True)
class Layer:
    """One weighted node: ``name`` is its ONNX node name (what ``--exclude`` takes)."""

    name: str
    op_type: str
    activation: str  # the data input (the tensor whose range calibration measures)
    weight_name: str
    weight: np.ndarray
    axis: int  # the weight's output-channel axis
    input_axis: int = 1  # the weight's input-channel axis
    groups: int = 1
    bias_name: str = ""  # "" when the layer has no bias input
    output: str = ""

    @property
    def channels(self) -> int:
        return int(self.weight.shape[self.axis])


def find_layers(model: onnx.ModelProto) -> list[Layer]:
    """The layers of the main graph, in graph order."""
    initializers = {t.name: t for t in model.graph.initializer}
    overridable = {i.name for i in model.graph.input} if model.ir_version >= 4 else set()
    layers = []
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        data, weight = node.input[0], node.input[1]
        if weight not in initializers or weight in overridable or data in initializers:
            continue
        tensor = initializers[weight]
        if tensor.data_type not in FLOAT_TYPES:
            continue
        axis = rule(node.op_type).kind.weight_axis(node, len(tensor.dims))
        if axis is None:
            continue
        # Every layer weight holds its channels on its first two axes: the input's is the other one.
        groups = int_attribute(node, "group", 1, minimum=1)
        bias = node.input[2] if len(node.input) > 2 else ""
        layers.append(Layer(node.name, node.op_type, data, weight, tensor_values(tensor, f" (weight of {node.name})"),
                            axis, 1 - axis, groups, bias, node.output[0] if node.output else ""))
    return layers
