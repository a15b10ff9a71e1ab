"""What TensorRT computes for the layers it leaves in float: float16 storage (``--float-precision fp16``).

A TensorRT engine built with INT8 and FP16 enabled (``trtexec --int8 --fp16``, its usual mixed
precision build) runs the layers without Q/DQ in FP16: their input, weight, bias and output are
float16 values.  onnxruntime's CPU provider has no float16 Conv, so the measurement rounds those
four tensors to float16 and back (``Cast`` to FLOAT16 then to FLOAT; weights and biases rounded
once, here) and computes in float32 in between.  That is float16 *storage*; TensorRT's FP16
kernels may also accumulate in float16, which this does not model.  Ops other than layers keep
float32.  A strongly typed TensorRT 10 build of a float32 model runs those layers in FP32: measure
that with ``--float-precision fp32``.  The written model never carries these casts.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from .layers import Layer
from .qdq import QDQWriter

FLOAT_PRECISIONS = ("fp16", "fp32")


def rounded_fp16(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to float16 (to nearest, ties to even; overflow to +-inf) and held as float32."""
    return np.asarray(values, dtype=np.float32).astype(np.float16).astype(np.float32)


def emulate_fp16(model: onnx.ModelProto, layers: Iterable[Layer]) -> onnx.ModelProto:
    """A copy of the (Q/DQ) ``model`` whose ``layers`` compute on float16-rounded tensors, as described above."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    writer = QDQWriter.on(copy)
    nodes = {n.name: n for n in graph.node}
    initializers = {t.name: t for t in graph.initializer}
    for layer in layers:
        node = nodes[layer.name]
        half = writer.node(layer.name, "Cast", [node.input[0]], f"{node.input[0]}_to_fp16", to=onnx.TensorProto.FLOAT16)
        node.input[0] = writer.node(layer.name, "Cast", [half], f"{node.input[0]}_rounded", to=onnx.TensorProto.FLOAT)
        for slot in (1, 2):
            if slot < len(node.input) and node.input[slot] in initializers:
                values = numpy_helper.to_array(initializers[node.input[slot]])
                node.input[slot] = writer.constant(f"{node.input[slot]}_fp16", rounded_fp16(values))
        final = node.output[0]
        node.output[0] = writer.names.fresh(f"{final}_fp32")
        half = writer.node(layer.name, "Cast", [node.output[0]], f"{final}_to_fp16", after=True, to=onnx.TensorProto.FLOAT16)
        writer.node(layer.name, "Cast", [half], f"{final}_rounded", after=True, output=final, to=onnx.TensorProto.FLOAT)
    writer.finish()
    return copy
