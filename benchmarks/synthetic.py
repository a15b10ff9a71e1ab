"""Synthetic QARepVGG networks of any size, written the way the TorchScript exporter writes them.

Each block: ``Conv3x3(+b); Conv1x1(+b); Mul(., alpha); Add; Add(., x); BatchNormalization; Relu``
with random weights and BatchNorm statistics.  Used by the benchmarks; needs only numpy and onnx.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def qarepvgg_network(blocks: int, channels: int, size: int = 8, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name, values):
        inits.append(numpy_helper.from_array(np.asarray(values, np.float32), name))
        return name

    x = "input"
    c = channels
    for i in range(blocks):
        p = f"blocks.{i}"
        scale = 1.0 / np.sqrt(9 * c)
        w3 = const(f"{p}.conv3.weight", rng.standard_normal((c, c, 3, 3), np.float32) * scale)
        b3 = const(f"{p}.conv3.bias", rng.standard_normal(c, np.float32) * 0.1)
        w1 = const(f"{p}.conv1.weight", rng.standard_normal((c, c, 1, 1), np.float32) * scale)
        b1 = const(f"{p}.conv1.bias", rng.standard_normal(c, np.float32) * 0.1)
        alpha = const(f"{p}.alpha", rng.uniform(0.5, 1.5, (1,)))
        bn = [
            const(f"{p}.post_bn.{k}", v)
            for k, v in (
                ("weight", rng.uniform(0.5, 1.5, c)),
                ("bias", rng.standard_normal(c) * 0.1),
                ("running_mean", rng.standard_normal(c) * 0.1),
                ("running_var", rng.uniform(0.5, 1.5, c)),
            )
        ]
        nodes += [
            helper.make_node("Conv", [x, w3, b3], [f"{p}.y3"], name=f"{p}/conv3", kernel_shape=[3, 3], pads=[1] * 4),
            helper.make_node("Conv", [x, w1, b1], [f"{p}.y1"], name=f"{p}/conv1", kernel_shape=[1, 1]),
            helper.make_node("Mul", [alpha, f"{p}.y1"], [f"{p}.a1"], name=f"{p}/mul"),
            helper.make_node("Add", [f"{p}.y3", f"{p}.a1"], [f"{p}.s"], name=f"{p}/add"),
            helper.make_node("Add", [f"{p}.s", x], [f"{p}.sx"], name=f"{p}/add_1"),
            helper.make_node("BatchNormalization", [f"{p}.sx", *bn], [f"{p}.bn"], name=f"{p}/post_bn", epsilon=1e-5),
            helper.make_node("Relu", [f"{p}.bn"], [f"{p}.out"], name=f"{p}/relu"),
        ]
        x = f"{p}.out"
    graph = helper.make_graph(
        nodes,
        "synthetic_qarepvgg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="benchmarks")
    model.ir_version = 8
    return model
