"""Q/DQ placement, node by node: layer inputs, the residual input of an Add fused into a layer, the inputs of
pooling/Concat/Resize/reshapes that feed quantized layers (and not those that also feed float ops), shared
scales across ops that only move values, the narrow placement, and layers kept in float."""

import numpy as np
import onnx
import pytest
from helpers.builders import GraphBuilder
from helpers.int8 import (
    assert_written,
    initializers,
    node,
    producers,
    quantized_source,
    sets,
)

from qarep_onnx.int8 import quantize
from qarep_onnx.runtime.sessions import run


def _network():
    """convA -> Relu -> MaxPool = p; convB(p) + p (residual); Relu = r2 -> convC, convD -> Concat -> Resize -> convE
    -> GlobalAveragePool -> Flatten -> Gemm.  p is read by convB and the Add, so MaxPool does not qualify."""
    b = GraphBuilder(seed=4)
    x = b.input([1, 4, 8, 8])
    r1 = b.op("Relu", [b.conv(x, 4, 8, 3)])
    p = b.op("MaxPool", [r1], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    s = b.op("Add", [b.conv(p, 8, 8, 3), p])
    r2 = b.op("Relu", [s])
    cat = b.op("Concat", [b.conv(r2, 8, 8, 1), b.conv(r2, 8, 8, 3)], axis=1)
    up = b.op("Resize", [cat, "", b.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
    e = b.conv(up, 16, 4, 3)
    f = b.op("Flatten", [b.op("GlobalAveragePool", [e])])
    out = b.op("Gemm", [f, b.const(b.rng.standard_normal((4, 3)) * 0.5, "wg"), b.const(np.zeros(3), "bg")])
    model = b.model([out])
    names = {n.op_type + str(k): n.name for k, n in enumerate(n for n in model.graph.node if n.op_type in ("Conv", "Gemm"))}
    return model, names


@pytest.fixture(scope="module")
def network():
    model, names = _network()
    calib, held = sets(model, range(4), "calib"), sets(model, [20], "held")
    results = {mode: quantize(model, calib=calib, holdout=held, fold=False, placement=mode, provider="cpu")
               for mode in ("tensorrt", "narrow")}
    return model, names, calib, held, results


def _reads(model, consumer: str) -> dict[int, str | None]:
    """Input slot -> the float tensor its Q/DQ quantizes (None when the slot reads a tensor directly)."""
    n = node(model, consumer)
    out = {}
    for slot, name in enumerate(n.input):
        source = quantized_source(model, name)
        out[slot] = source[0] if source else None
    return out


def test_tensorrt_placement_node_by_node(network):
    model, names, calib, held, results = network
    q = results["tensorrt"].model
    assert_written(q, model)
    g = {n.name: n for n in model.graph.node}
    conv_a, conv_b, conv_c, conv_d, conv_e = (names[k] for k in ("Conv0", "Conv1", "Conv2", "Conv3", "Conv4"))
    gemm = names["Gemm5"]
    by_type = {n.op_type: n for n in q.graph.node}
    add, concat, resize = by_type["Add"], by_type["Concat"], by_type["Resize"]
    gap, flatten, maxpool = by_type["GlobalAveragePool"], by_type["Flatten"], by_type["MaxPool"]
    # every layer: data input through Q/DQ of the float tensor the original fed it
    for layer in (conv_a, conv_b, conv_c, conv_d, conv_e, gemm):
        assert _reads(q, layer)[0] == g[layer].input[0], layer
        weight = producers(q)[node(q, layer).input[1]]
        assert weight.op_type == "DequantizeLinear" and initializers(q)[weight.input[0]].dtype == np.int8
    # the Add's skip input (MaxPool's output) is quantized; its other operand, convB's output, is not
    skip = g[conv_b].input[0]
    assert _reads(q, add.name) == {0: None, 1: skip}
    # Concat, Resize, GlobalAveragePool and Flatten feed only quantized layers: their data inputs are quantized
    assert _reads(q, concat.name) == {0: g[conv_c].output[0], 1: g[conv_d].output[0]}
    assert _reads(q, resize.name)[0] == next(n for n in model.graph.node if n.op_type == "Concat").output[0]
    assert _reads(q, resize.name)[2] is None  # the scales input is not data
    assert _reads(q, gap.name) == {0: g[conv_e].output[0]}
    assert _reads(q, flatten.name)[0] is not None
    # MaxPool's output is read by the Add too (a float op): int8 does not flow through it, no pair on its input
    assert _reads(q, maxpool.name) == {0: None}
    layout = results["tensorrt"].report.layout
    assert (layout.residual_pairs, layout.flow_pairs) == (1, 5)
    assert layout.qdq_pairs == 6 + 6 + 1 + 5  # activations of 6 layers, 6 weights, residual, flow
    assert sum(1 for n in q.graph.node if n.op_type == "DequantizeLinear") == layout.qdq_pairs
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in initializers(q) for n in q.graph.node)


def _scale(q, consumer: str, slot: int) -> float:
    _, quant, _ = quantized_source(q, node(q, consumer).input[slot])
    return float(initializers(q)[quant.input[1]])


def test_ops_that_move_values_share_one_scale_and_averaging_ops_do_not(network):
    model, names, calib, held, results = network
    q = results["tensorrt"].model
    by_type = {n.op_type: n for n in q.graph.node}
    concat_out = next(n for n in model.graph.node if n.op_type == "Concat").output[0]
    resize_out = next(n for n in model.graph.node if n.op_type == "Resize").output[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    g = {n.name: n for n in model.graph.node}
    watched = [g[names["Conv2"]].output[0], g[names["Conv3"]].output[0], concat_out, resize_out, g[names["Conv4"]].output[0]]
    for t in watched:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    seen = {t: max(float(np.abs(run(probe, s.feeds)[t]).max()) for s in calib) for t in watched}
    group = max(seen[t] for t in watched[:4])  # Concat inputs, Concat output, Resize output: one group
    for consumer, slot in ((by_type["Concat"].name, 0), (by_type["Concat"].name, 1), (by_type["Resize"].name, 0),
                           (names["Conv4"], 0)):
        assert _scale(q, consumer, slot) == pytest.approx(group / 127, rel=1e-6)
    # GlobalAveragePool computes new values: its input keeps its own range (convE's output)
    assert _scale(q, by_type["GlobalAveragePool"].name, 0) == pytest.approx(seen[watched[4]] / 127, rel=1e-6)


def test_narrow_placement_quantizes_layer_inputs_only(network):
    model, names, calib, held, results = network
    q = results["narrow"].model
    assert_written(q, model)
    layout = results["narrow"].report.layout
    assert (layout.residual_pairs, layout.flow_pairs, layout.qdq_pairs) == (0, 0, 12)
    for n in q.graph.node:
        if n.op_type in ("Add", "Concat", "Resize", "GlobalAveragePool", "Flatten", "MaxPool"):
            assert all(v is None for v in _reads(q, n.name).values()), n.op_type


def test_pairs_that_need_a_float_layer_are_left_out(network):
    model, names, calib, held, _ = network
    result = quantize(model, calib=calib, holdout=held, fold=False, exclude=[names["Conv1"], names["Conv4"]], provider="cpu")
    q = result.model
    assert_written(q, model)
    by_type = {n.op_type: n for n in q.graph.node}
    assert _reads(q, by_type["Add"].name) == {0: None, 1: None}  # convB in float: no fusion, no residual pair
    assert all(v is None for v in _reads(q, by_type["Concat"].name).values())  # flows into convE, which is float
    assert all(v is None for v in _reads(q, by_type["Resize"].name).values())
    assert _reads(q, by_type["GlobalAveragePool"].name)[0] is not None  # still flows into the quantized Gemm
    assert result.report.layout.float_layers == (names["Conv1"], names["Conv4"])
    assert (result.report.layout.residual_pairs, result.report.layout.flow_pairs) == (0, 2)


def test_float_weights_form_keeps_weights_float_behind_qdq(network):
    model, names, calib, held, results = network
    result = quantize(model, calib=calib, holdout=held, fold=False, weights="float", provider="cpu")
    assert_written(result.model, model)
    q = result.model
    for layer in names.values():
        source = quantized_source(q, node(q, layer).input[1])
        assert source is not None and initializers(q)[source[0]].dtype == np.float32
    int8 = {t.name for t in q.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    assert not any(n.op_type == "DequantizeLinear" and n.input[0] in int8 for n in q.graph.node)
    assert not result.report.layout.int8_weights and results["tensorrt"].report.layout.int8_weights
    # the same numbers as int8 weights: QuantizeLinear computes the int8 values the int8 form stores
    feeds = held[0].feeds
    a, b = run(q, feeds), run(results["tensorrt"].model, feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert result.report.measurement.sqnr_db == results["tensorrt"].report.measurement.sqnr_db
    def weight_bytes(m):
        made, values = producers(m), initializers(m)
        total = 0
        for layer in names.values():
            dq = made[node(m, layer).input[1]]
            source = made.get(dq.input[0])
            total += values[source.input[0] if source is not None else dq.input[0]].nbytes
        return total

    assert weight_bytes(result.model) == 4 * weight_bytes(results["tensorrt"].model)
