"""The Q/DQ model: int8, zero points 0, weight scales per output channel, Q/DQ on layer inputs only,
the calibrated activation scales, weights quantized exactly as onnxruntime does, layers kept in float
reading float tensors, and the forms onnxruntime's quantizer needs (opset, Identity weights, names)."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.builders import GraphBuilder
from helpers.int8 import assert_written
from onnx import helper, numpy_helper

from qarep_onnx.errors import UsageError
from qarep_onnx.int8 import int8_report, quantize
from qarep_onnx.int8.prepare import prepare
from qarep_onnx.runtime.inputs import InputSet, random_input_sets
from qarep_onnx.runtime.sessions import run

FIXTURES = Path(__file__).parent.parent / "fixtures"
OUTLIER = FIXTURES / "models" / "int8_outlier__torchscript.onnx"
LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _sets(model, seeds, label):
    return [InputSet(random_input_sets(model, 1, s)[0].feeds, f"{label} {s}") for s in seeds]


def _qdq(model, **kwargs):
    return quantize(model, calib=_sets(model, range(3), "calib"), holdout=_sets(model, [10], "held"), provider="cpu", **kwargs)


def _init(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _producer(model):
    return {o: n for n in model.graph.node for o in n.output}


def _consumers(model, name):
    return [n for n in model.graph.node if name in n.input]


def test_structure_is_what_tensorrt_explicit_quantization_takes():
    model = onnx.load(OUTLIER)
    before = OUTLIER.read_bytes()
    result = _qdq(model)
    q, init, producer = result.model, _init(result.model), _producer(result.model)
    assert_written(q, model)
    assert OUTLIER.read_bytes() == before and model.SerializeToString() == before
    layers = [n for n in q.graph.node if n.op_type in LAYERS]
    # 7 layer inputs, 7 weights, and the GlobalAveragePool and Flatten that feed the Gemm
    assert len(layers) == 7 and result.report.layout.qdq_pairs == 16 and result.report.layout.flow_pairs == 2
    assert set(result.report.layout.quantized_layers) == {n.name for n in layers} and not result.report.layout.float_layers
    for node in q.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = init[node.input[2]]
            assert zero.dtype == np.int8 and not zero.any(), node.name
            assert init[node.input[1]].dtype == np.float32
            assert len(_consumers(q, node.output[0])) == 1  # a dedicated pair per consumer
    for layer in layers:
        dq_x, dq_w = producer[layer.input[0]], producer[layer.input[1]]
        assert dq_x.op_type == dq_w.op_type == "DequantizeLinear"
        assert producer[dq_x.input[0]].op_type == "QuantizeLinear"
        assert init[producer[dq_x.input[0]].input[1]].shape == ()  # activations: one scale per tensor
        weight = init[dq_w.input[0]]  # weights stored as int8 behind the DequantizeLinear, one scale per output channel
        axis = next(a.i for a in dq_w.attribute if a.name == "axis")
        assert weight.dtype == np.int8 and axis == 0
        assert init[dq_w.input[1]].shape == (weight.shape[axis],) and np.abs(weight).max() == 127
        assert layer.input[2] in init and init[layer.input[2]].dtype == np.float32  # bias float, not int32 DQ
        assert not any(c.op_type == "QuantizeLinear" for c in _consumers(q, layer.output[0]))  # outputs not quantized
    assert q.ir_version == model.ir_version and q.opset_import[0].version == 18
    assert not any(p.key == "onnx.infer" for p in q.metadata_props)


def test_int8_weights_are_what_quantizelinear_computes_and_activation_scales_follow_the_method():
    model = onnx.load(OUTLIER)
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    calib = _sets(model, range(3), "calib")
    result = quantize(model, calib=calib, holdout=_sets(model, [10], "held"), calib_method="max", provider="cpu")
    q, init, producer = result.model, _init(result.model), _producer(result.model)
    source = {n.name: n for n in model.graph.node}
    for layer in (n for n in q.graph.node if n.op_type in LAYERS):
        dq = producer[layer.input[1]]
        stored, scale = init[dq.input[0]], init[dq.input[1]]
        original = originals[source[layer.name].input[1]]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        # onnxruntime's own QuantizeLinear on the float weight with the same scales gives the same int8 values
        probe = helper.make_model(helper.make_graph(
            [helper.make_node("QuantizeLinear", ["w", "s", "z"], ["q"], axis=axis)], "probe",
            [helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, list(original.shape))],
            [helper.make_tensor_value_info("q", onnx.TensorProto.INT8, list(original.shape))],
            [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.zeros(scale.shape, np.int8), "z")]),
            opset_imports=[helper.make_opsetid("", 13)])
        probe.ir_version = 7
        np.testing.assert_array_equal(run(probe, {"w": original})["q"], stored)
        channels = np.moveaxis(np.abs(original), axis, 0).reshape(len(scale), -1).max(axis=1)
        np.testing.assert_allclose(scale, channels / 127, rtol=1e-6)
    first = next(n for n in q.graph.node if n.op_type == "Conv")  # it reads the graph input: range = the inputs' absmax
    absmax = max(float(np.abs(s.feeds["input"]).max()) for s in calib)
    assert float(init[producer[producer[first.input[0]].input[0]].input[1]]) == pytest.approx(absmax / 127, rel=1e-6)
    # percentile: the smallest magnitude at or below which 99 % of the non-zero magnitudes lie, to a histogram bin
    result = quantize(model, calib=calib, holdout=_sets(model, [10], "held"), calib_method="percentile", percentile=99.0,
                      provider="cpu")
    q, init, producer = result.model, _init(result.model), _producer(result.model)
    first = next(n for n in q.graph.node if n.op_type == "Conv")
    values = np.sort(np.abs(np.concatenate([s.feeds["input"].reshape(-1) for s in calib])))
    values = values[values > 0]
    expected = values[int(np.ceil(0.99 * values.size)) - 1]
    threshold = float(init[producer[producer[first.input[0]].input[0]].input[1]]) * 127
    width = 4 * absmax / 2048  # the histogram spans at most four times the first set's largest magnitude
    assert expected - 1e-6 <= threshold <= expected + width and threshold < 0.8 * absmax


def _branchy(opset=17, constants="initializer"):
    """x -> conv1 -> relu = y1 (graph output) -> conv2 -> ...; y1 also feeds a BatchNormalization (output)."""
    b = GraphBuilder(seed=1, constants=constants)
    x = b.input([1, 4, 8, 8])
    y1 = b.op("Relu", [b.conv(x, 4, 6, 3)])
    y2 = b.conv(y1, 6, 6, 1)
    bn = b.batch_norm(y1, 6)
    f = b.op("Flatten", [b.op("GlobalAveragePool", [y2])])
    g = b.op("Gemm", [f, b.const(b.rng.standard_normal((6, 5)) * 0.3, "wg"), b.const(np.ones(5), "bg")], beta=0.7)
    model = b.model([y1, bn, g], opset=opset)
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.name = ""  # an unnamed node gets a name of its own
    return model


def test_layers_kept_in_float_and_other_ops_read_float_tensors():
    model = _branchy()
    names = [n.name for n in model.graph.node if n.op_type == "Conv"]
    feeds = random_input_sets(model, 1, 5)[0].feeds
    reference = run(model, feeds)
    result = _qdq(model, exclude=[names[0]], float_precision="fp32")
    q, producer = result.model, _producer(result.model)
    assert_written(q, model)
    assert result.report.excluded == (names[0],) and result.report.layout.float_layers == (names[0],)
    conv1 = next(n for n in q.graph.node if n.name == names[0])
    assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in conv1.input)
    bn = next(n for n in q.graph.node if n.op_type == "BatchNormalization")
    assert producer[bn.input[0]].op_type == "Relu"  # a non-layer op reads the float tensor
    assert all(producer[o.name].op_type != "DequantizeLinear" for o in q.graph.output)
    out = run(q, feeds)
    y1, bn_out, gemm = (o.name for o in model.graph.output)
    np.testing.assert_array_equal(out[y1], reference[y1])  # the excluded first conv and the graph output stay float
    np.testing.assert_array_equal(out[bn_out], reference[bn_out])
    assert not np.array_equal(out[gemm], reference[gemm])  # the later layers are in int8
    assert result.report.measurement.outputs[0].sqnr_db == float("inf")
    # measured as TensorRT's --fp16 build computes the float layer: its float16 rounding shows, and only that
    fp16 = _qdq(model, exclude=[names[0]], float_precision="fp16").report.measurement.outputs[0]
    assert 55 < fp16.sqnr_db < 90 and fp16.name == y1


def test_old_opset_identity_weights_unnamed_nodes_and_gemm_beta():
    model = _branchy(opset=11, constants="identity")
    feeds = random_input_sets(model, 1, 5)[0].feeds
    prepared = prepare(model)
    assert prepared.opset_import[0].version == 13 and prepared.ir_version >= 7
    assert all(n.name for n in prepared.graph.node) and len({n.name for n in prepared.graph.node}) == len(prepared.graph.node)
    gemm = next(n for n in prepared.graph.node if n.op_type == "Gemm")
    assert next(a.f for a in gemm.attribute if a.name == "beta") == 1.0  # beta went into C
    reference, same = run(model, feeds), run(prepared, feeds)
    for name in reference:
        np.testing.assert_allclose(same[name], reference[name], rtol=1e-6, atol=1e-6)
    result = _qdq(model)
    assert_written(result.model)
    assert result.model.ir_version == max(model.ir_version, 7)  # opset 13 needs IR 7: raised that far at most
    assert len(result.report.layout.quantized_layers) == 3 and result.report.layout.opset == 13
    assert 20 < result.report.measurement.sqnr_db < 60


def test_float16_models_are_refused_for_quantization_but_get_a_weight_report():
    path = FIXTURES / "models" / "repvgg_block_fp16__torchscript.onnx"
    with pytest.raises(UsageError, match="FLOAT16.*float32"):
        quantize(path, provider="cpu")
    report = int8_report(path, provider="cpu")
    assert len(report.model.layers) == 2 and report.model.quantized is None and "FLOAT16" in report.model.skipped
    assert report.folded is not None and len(report.folded.layers) == 1 and report.folded.layers[0].from_fold
    json.dumps(report.to_dict(), allow_nan=False)


def test_a_gemm_beta_of_the_wrong_type_is_a_one_line_error_not_a_zero_bias():
    import pytest
    from helpers.builders import GraphBuilder
    from onnx import helper

    import qarep_onnx

    b = GraphBuilder(seed=3)
    x = b.input([2, 8])
    y = b.op("Gemm", [x, b.const(b.rng.standard_normal((8, 4)), "B"), b.const(b.rng.standard_normal(4), "C")])
    model = b.model([y])
    gemm = model.graph.node[-1]
    gemm.attribute.append(helper.make_attribute("beta", 2))  # an INT where Gemm takes a FLOAT
    with pytest.raises(qarep_onnx.InputModelError, match="beta"):
        qarep_onnx.quantize(model, fold=False, samples=1)
