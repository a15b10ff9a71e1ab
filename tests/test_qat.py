"""Models that already carry Q/DQ (QAT exports): folded only between Q/DQ, weights never dequantized ahead."""

import numpy as np
import onnx
from helpers.builders import GraphBuilder
from helpers.checks import count
from helpers.linear import codes, folded
from onnx import TensorProto

F = TensorProto.FLOAT


# -- models that already carry Q/DQ (QAT exports) --------------------------------------------------------


def _qdq(b, x, scale=0.05):
    s, z = b.const(np.array(scale), "scale"), b.const(np.array(0), "zero")
    b.initializers[-1].CopyFrom(onnx.numpy_helper.from_array(np.array(0, np.int8), b.initializers[-1].name))
    return b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, s, z]), s, z])


def test_a_qat_model_folds_only_between_its_q_dq_and_never_dequantizes_a_weight_ahead_of_time():
    b = GraphBuilder(seed=24)
    x = _qdq(b, b.input([1, 8, 6, 6]))
    # A block whose branches have float weights: it folds (its source is the DequantizeLinear's output).
    clean = b.op("Relu", [b.batch_norm(b.op("Add", [b.op("Add", [b.conv(x, 8, 8, 3), b.conv(x, 8, 8, 1, pad=0)]), x]), 8)])
    # A block with Q/DQ inside one branch: refused.
    inner = b.op("Add", [b.conv(clean, 8, 8, 3), _qdq(b, b.conv(clean, 8, 8, 1, pad=0))])
    # A Conv whose weight is an int8 initializer behind a DequantizeLinear, followed by a BatchNorm: not folded.
    w8 = b.const(np.zeros((8, 8, 1, 1)), "w8")
    b.initializers[-1].CopyFrom(onnx.numpy_helper.from_array(b.rng.integers(-100, 100, (8, 8, 1, 1)).astype(np.int8), w8))
    weight = b.op("DequantizeLinear", [w8, b.const(np.array(0.01), "wscale")])
    quantized = b.batch_norm(b.op("Conv", [inner, weight], kernel_shape=[1, 1]), 8)
    model = b.model([quantized])
    optimized, report = folded(model)
    assert report.qdq_pairs == 2 and report.dequantized_constants == 1
    assert report.blocks_folded == 1 and "BLOCKING_OP" in codes(report) and "NON_CONSTANT" in codes(report)
    assert count(optimized, "QuantizeLinear") == 2 and count(optimized, "DequantizeLinear") == 3
    assert w8 in {t.name for t in optimized.graph.initializer}
    assert report.to_dict()["qdq"] == {"pairs": 2, "dequantized_constants": 1}
