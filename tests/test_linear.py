"""Folds into Gemm, MatMul and ConvTranspose, affines taken over from a leaf's input, zero Pads taken over by a
Conv, and parallel linear heads merged; every trap refused with a code and a sentence."""

import numpy as np
import onnx
import pytest
from builders import GraphBuilder
from conftest import assert_same_function, count
from onnx import TensorProto, helper

import qarep_onnx

F = TensorProto.FLOAT


def _batch_norm_1d(b, x, channels, shift=True):
    r = b.rng
    params = [
        b.const(r.uniform(0.5, 1.5, channels), "gamma"),
        b.const(r.standard_normal(channels) * 0.3 if shift else np.zeros(channels), "beta"),
        b.const(r.standard_normal(channels) * 0.3 if shift else np.zeros(channels), "mean"),
        b.const(r.uniform(0.5, 1.5, channels), "var"),
    ]
    return b.op("BatchNormalization", [x, *params], epsilon=1e-3)


def _gemm(b, x, k, n, trans_a=0, trans_b=1, alpha=1.0, beta=1.0, c_shape=(None,)):
    w = b.rng.standard_normal((n, k) if trans_b else (k, n)) * 0.3
    inputs = [x, b.const(w, "B")]
    if c_shape != (None,):
        shape = {"n": (n,), "1n": (1, n), "scalar": (), "one": (1,)}[c_shape]
        inputs.append(b.const(b.rng.standard_normal(shape) * 0.2, "C"))
    return b.op("Gemm", inputs, transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)


def _folded(model, **kwargs):
    optimized, report = qarep_onnx.optimize(model, **kwargs)
    assert_same_function(model, optimized)
    again, second = qarep_onnx.optimize(optimized, **kwargs)
    assert second.regions_folded == 0 and again.SerializeToString() == optimized.SerializeToString()
    onnx.checker.check_model(optimized, full_check=True)
    return optimized, report


def _codes(report):
    return {r.code for r in report.refusals}


# -- Gemm ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0), (-1.5, 0.25)])
@pytest.mark.parametrize("c_shape", [(None,), "n", "1n", "scalar", "one"])
def test_gemm_then_batch_norm_and_affines_fold_into_one_gemm(trans_b, alpha, beta, c_shape):
    b = GraphBuilder(seed=1)
    x = b.input([4, 12])
    y = _gemm(b, x, 12, 6, trans_b=trans_b, alpha=alpha, beta=beta, c_shape=c_shape)
    y = _batch_norm_1d(b, y, 6)
    y = b.op("Mul", [y, b.const(b.rng.uniform(0.5, 2, (6,)), "s")])
    y = b.op("Sub", [y, b.const(b.rng.standard_normal((1, 6)), "o")])
    model = b.model([b.op("Relu", [y])])
    optimized, report = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm", "Relu"]
    assert report.folds[0].op_types == ("Gemm",) and report.folds[0].removed_op_types[0] == "Gemm"


def test_transposed_input_gemm_folds_what_follows_it():
    b = GraphBuilder(seed=2)
    x = b.input([12, 4])  # transA: features on the first axis
    y = _gemm(b, x, 12, 6, trans_a=1, trans_b=0, c_shape="n")
    model = b.model([_batch_norm_1d(b, y, 6)])
    optimized, _ = _folded(model)
    (gemm,) = optimized.graph.node
    assert gemm.op_type == "Gemm" and {a.name: a.i for a in gemm.attribute}["transA"] == 1


def test_a_gemm_bias_that_is_not_per_feature_is_refused():
    b = GraphBuilder(seed=3)
    x = b.input([4, 12])
    w = b.const(b.rng.standard_normal((12, 6)), "B")
    c = b.const(b.rng.standard_normal((4, 6)), "C")  # one bias per row and feature
    model = b.model([_batch_norm_1d(b, b.op("Gemm", [x, w, c]), 6)])
    optimized, report = _folded(model)
    assert report.regions_folded == 0 and "NOT_PER_CHANNEL" in _codes(report)
    assert count(optimized, "BatchNormalization") == 1


# -- MatMul ---------------------------------------------------------------------------------------------


def test_matmul_add_batch_norm_on_a_2d_input_becomes_one_gemm():
    b = GraphBuilder(seed=4)
    x = b.input([3, 10])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((10, 7)), "W")])
    y = b.op("Add", [y, b.const(b.rng.standard_normal(7), "bias")])
    model = b.model([_batch_norm_1d(b, y, 7)])
    optimized, _ = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"]


def test_matmul_on_tokens_folds_a_per_feature_affine_into_matmul_and_add():
    b = GraphBuilder(seed=5)
    x = b.input([1, 6, 16])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((16, 24)), "W")])
    y = b.op("Add", [y, b.const(b.rng.standard_normal(24), "bias")])
    y = b.op("Mul", [y, b.const(b.rng.uniform(0.5, 1.5, 24), "gamma")])
    y = b.op("Add", [y, b.const(b.rng.standard_normal((1, 1, 24)), "beta")])
    model = b.model([b.op("Relu", [y])])
    optimized, report = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["MatMul", "Add", "Relu"]
    assert report.folds[0].op_types == ("MatMul", "Add")


def test_a_scale_after_a_bias_free_matmul_keeps_it_one_matmul():
    b = GraphBuilder(seed=6)
    x = b.input([2, 5, 8])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((8, 8)), "W")])
    model = b.model([b.op("Mul", [y, b.const(np.array(0.5), "half")])])
    optimized, _ = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["MatMul"]


def test_batch_norm_after_a_token_matmul_normalizes_the_wrong_axis_and_is_refused():
    b = GraphBuilder(seed=7)
    x = b.input([2, 6, 16])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((16, 6)), "W")])  # [2, 6, 6]: BN's axis 1 is the tokens
    model = b.model([_batch_norm_1d(b, y, 6)])
    optimized, report = _folded(model)
    assert report.regions_folded == 0 and "NOT_PER_CHANNEL" in _codes(report)
    assert any("axis 1" in r.message and "axis 2" in r.message for r in report.refusals)


def test_a_constant_multiplied_from_the_left_is_no_leaf():
    b = GraphBuilder(seed=8)
    x = b.input([6, 4])
    y = b.op("MatMul", [b.const(b.rng.standard_normal((5, 6)), "A"), x])
    model = b.model([b.op("Mul", [y, b.const(b.rng.uniform(0.5, 1.5, (4,)), "s")])])
    optimized, report = _folded(model)
    assert report.regions_folded == 0 and count(optimized, "Mul") == 1


# -- ConvTranspose ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups, stride, pads, output_padding, dilation, kernel", [
    (1, 2, 1, 0, 1, 4), (2, 2, 1, 1, 1, 3), (1, 1, 0, 0, 2, 3), (4, 3, 2, 2, 1, 5), (1, 2, 0, 0, 1, 2),
])
def test_conv_transpose_then_batch_norm_and_affines_fold(groups, stride, pads, output_padding, dilation, kernel):
    b = GraphBuilder(seed=9)
    x = b.input([1, 8, 5, 5])
    w = b.const(b.rng.standard_normal((8, 12 // groups, kernel, kernel)) * 0.3, "w")
    y = b.op("ConvTranspose", [x, w, b.const(b.rng.standard_normal(12), "b")], strides=[stride] * 2, pads=[pads] * 4,
             output_padding=[output_padding] * 2, dilations=[dilation] * 2, group=groups)
    y = b.batch_norm(y, 12)
    y = b.op("Mul", [y, b.const(b.rng.uniform(0.5, 2, (1, 12, 1, 1)), "s")])
    model = b.model([b.op("Relu", [y])])
    optimized, report = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["ConvTranspose", "Relu"]
    assert report.folds[0].op_types == ("ConvTranspose",)


def test_conv_transposes_merge_only_with_the_same_geometry():
    b = GraphBuilder(seed=10)
    x = b.input([1, 4, 5, 5])
    same = [b.op("ConvTranspose", [x, b.const(b.rng.standard_normal((4, 4, 3, 3)), "w")], strides=[2, 2]) for _ in range(2)]
    merged = b.model([b.op("Add", same)])
    optimized, report = _folded(merged)
    assert report.blocks_folded == 1 and count(optimized, "ConvTranspose") == 1
    b = GraphBuilder(seed=11)
    x = b.input([1, 4, 5, 5])
    different = [b.op("ConvTranspose", [x, b.const(b.rng.standard_normal((4, 4, k, k)), "w")], strides=[2, 2], pads=[p] * 4)
                 for k, p in ((3, 1), (5, 2))]
    refused = b.model([b.op("Add", different)])
    optimized, report = _folded(refused)
    assert report.blocks_folded == 0 and "MISALIGNED" in _codes(report)


# -- a per-channel affine in front of the leaf ------------------------------------------------------------------


def test_batch_norm_before_an_unpadded_conv_folds_into_it():
    b = GraphBuilder(seed=12)
    x = b.input([1, 8, 6, 6])
    y = b.conv(_batch_norm_1d(b, x, 8), 8, 12, 3, pad=0, groups=4)
    model = b.model([b.op("Relu", [y])])
    optimized, report = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Conv", "Relu"] and report.blocks_folded == 0


def test_batch_norm_before_a_padded_conv_is_refused_with_its_reason():
    b = GraphBuilder(seed=13)
    x = b.input([1, 8, 6, 6])
    model = b.model([b.conv(_batch_norm_1d(b, x, 8), 8, 8, 3)])
    optimized, report = _folded(model)
    assert report.regions_folded == 0 and "PADDED_INPUT_SHIFT" in _codes(report)
    assert count(optimized, "BatchNormalization") == 1


def test_a_pure_scale_before_a_padded_conv_folds():
    b = GraphBuilder(seed=14)
    x = b.input([1, 8, 6, 6])
    scaled = b.op("Mul", [x, b.const(b.rng.uniform(0.5, 2, (1, 8, 1, 1)), "s")])
    no_shift = _batch_norm_1d(b, scaled, 8, shift=False)
    model = b.model([b.conv(no_shift, 8, 8, 3)])
    optimized, _ = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Conv"]


def test_an_affine_before_a_gemm_folds_into_it():
    b = GraphBuilder(seed=15)
    x = b.input([3, 10])
    y = b.op("Add", [b.op("Mul", [x, b.const(b.rng.uniform(0.5, 2, (10,)), "t")]), b.const(b.rng.standard_normal(10), "s")])
    model = b.model([_gemm(b, y, 10, 4, c_shape="n")])
    optimized, _ = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"]


@pytest.mark.parametrize("kernel, stride, shift, folds", [(3, 2, True, False), (3, 2, False, True), (1, 1, True, True)])
def test_an_affine_before_a_conv_transpose_folds_only_where_exact(kernel, stride, shift, folds):
    b = GraphBuilder(seed=16)
    x = b.input([1, 6, 4, 4])
    y = _batch_norm_1d(b, x, 6, shift=shift)
    w = b.const(b.rng.standard_normal((6, 6, kernel, kernel)), "w")
    model = b.model([b.op("ConvTranspose", [y, w], strides=[stride] * 2)])
    optimized, report = _folded(model)
    assert (count(optimized, "BatchNormalization") == 0) == folds
    assert ("PADDED_INPUT_SHIFT" in _codes(report)) == (not folds)


# -- zero Pads ----------------------------------------------------------------------------------------------------


def _pad(b, x, pads, value=None, mode=None, axes=None, opset_style="inputs"):
    if opset_style == "attribute":
        attrs = {"pads": list(pads)} | ({"value": value} if value is not None else {}) | ({"mode": mode} if mode else {})
        return b.op("Pad", [x], **attrs)
    inputs = [x, b.const(np.array(pads, np.int64), "pads")]
    b.initializers[-1].CopyFrom(onnx.numpy_helper.from_array(np.array(pads, np.int64), b.initializers[-1].name))
    if value is not None or axes is not None:
        inputs.append(b.const(np.array(value or 0.0), "value"))
    if axes is not None:
        inputs.append(b.const(np.array(axes, np.int64), "axes"))
        b.initializers[-1].CopyFrom(onnx.numpy_helper.from_array(np.array(axes, np.int64), b.initializers[-1].name))
    return b.op("Pad", inputs, **({"mode": mode} if mode else {}))


@pytest.mark.parametrize("style", ["inputs", "axes", "attribute"])
def test_a_tf2onnx_repvit_block_with_an_explicit_zero_pad_folds_to_one_conv(style):
    """Pad(x, 1) -> dw3x3 (pads 0) -> BN, + dw1x1 -> BN, + x, then BN: one depthwise 3x3, no Pad, no BatchNorm."""
    b = GraphBuilder(seed=17)
    x = b.input([1, 16, 8, 8])
    if style == "axes":
        padded = _pad(b, x, [1, 1, 1, 1], axes=[2, 3])
    elif style == "attribute":
        padded = _pad(b, x, [0, 0, 1, 1, 0, 0, 1, 1], opset_style="attribute")
    else:
        padded = _pad(b, x, [0, 0, 1, 1, 0, 0, 1, 1])
    y3 = b.batch_norm(b.conv(padded, 16, 16, 3, pad=0, groups=16, bias=False), 16)
    y1 = b.batch_norm(b.conv(x, 16, 16, 1, pad=0, groups=16, bias=False), 16)
    s = b.batch_norm(b.op("Add", [b.op("Add", [y3, y1]), x]), 16)
    model = b.model([b.op("Relu", [s])], opset=18 if style == "axes" else (10 if style == "attribute" else 17))
    optimized, report = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Conv", "Relu"] and report.blocks_folded == 1
    conv = optimized.graph.node[0]
    assert {a.name: list(a.ints) for a in conv.attribute}["pads"] == [1, 1, 1, 1]
    assert "Pad" in report.folds[0].removed_op_types


@pytest.mark.parametrize("case, pads, value, mode", [
    ("non-zero value", [0, 0, 1, 1, 0, 0, 1, 1], 0.5, None),
    ("reflect", [0, 0, 1, 1, 0, 0, 1, 1], None, "reflect"),
    ("channel axis", [0, 1, 1, 1, 0, 0, 1, 1], None, None),
    ("negative", [0, 0, -1, 0, 0, 0, 0, 0], None, None),
])
def test_pads_a_conv_cannot_take_over_are_refused(case, pads, value, mode):
    b = GraphBuilder(seed=18)
    x = b.input([1, 8, 8, 8])
    padded = _pad(b, x, pads, value=value, mode=mode)
    channels = 9 if case == "channel axis" else 8
    y3 = b.conv(padded, channels, 8, 3, pad=0)
    y1 = b.conv(x, 8, 8, 1, pad=0)
    if case in ("channel axis", "negative"):
        model = b.model([y3, y1])
    else:
        model = b.model([b.op("Add", [y3, y1])])
    optimized, report = _folded(model)
    assert count(optimized, "Pad") == 1 and report.blocks_folded == 0
    if case not in ("channel axis", "negative"):
        assert "BLOCKING_OP" in _codes(report)
        assert any(("0.5" in r.message) or ("reflect" in r.message) for r in report.refusals)


# -- parallel heads -------------------------------------------------------------------------------------------------


def _repvit_head(seed=19, dtype=np.float32):
    """(Gemm(BN1(x)) + Gemm(BN2(x))) / 2: RepViT's classifier with its distillation head."""
    b = GraphBuilder(seed=seed, dtype=dtype)
    x = b.input([2, 32])
    heads = [_gemm(b, _batch_norm_1d(b, x, 32), 32, 10, c_shape="n") for _ in range(2)]
    return b.model([b.op("Div", [b.op("Add", heads), b.const(np.array(2.0), "two")])])


def test_averaged_heads_with_their_batch_norms_merge_into_one_gemm():
    optimized, report = _folded(_repvit_head())
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"]
    assert report.blocks_folded == 1 and report.folds[0].branches == 2


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_heads_keep_their_dtype(dtype):
    model = _repvit_head(dtype=dtype)
    optimized, _ = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"]
    assert {t.data_type for t in optimized.graph.initializer} == {onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))}


def test_a_head_read_elsewhere_is_not_merged():
    model = _repvit_head()
    first_head = next(n for n in model.graph.node if n.op_type == "Gemm").output[0]
    model.graph.output.append(helper.make_tensor_value_info(first_head, F, [2, 10]))
    optimized, report = _folded(model)
    assert report.blocks_folded == 0 and count(optimized, "Gemm") == 2


def test_a_residual_linear_layer_merges_with_its_identity():
    b = GraphBuilder(seed=20)
    x = b.input([4, 16])
    model = b.model([b.op("Add", [_gemm(b, x, 16, 16, c_shape="n"), x])])
    optimized, report = _folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"] and report.folds[0].branches == 2


def test_keep_post_bn_keeps_the_batch_norm_after_a_gemm():
    b = GraphBuilder(seed=21)
    x = b.input([4, 16])
    y = _batch_norm_1d(b, _gemm(b, _batch_norm_1d(b, x, 16), 16, 8, c_shape="n"), 8)
    optimized, report = _folded(b.model([y]), keep_post_bn=True)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm", "BatchNormalization"]


def test_a_gemm_block_inside_a_function_folds():
    b = GraphBuilder(seed=22, constants="constant")
    y = _batch_norm_1d(b, _gemm(b, "fx", 16, 8, c_shape="n"), 8)
    function = helper.make_function("ex", "Head", ["fx"], [y], b.nodes, [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Head", ["x"], ["y"], domain="ex")], "g",
                              [helper.make_tensor_value_info("x", F, [4, 16])], [helper.make_tensor_value_info("y", F, [4, 8])])
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ex", 1)])
    model.ir_version = 8
    optimized, report = _folded(model)
    assert report.regions_folded == 1
    assert [n.op_type for n in optimized.functions[0].node] == ["Constant", "Constant", "Gemm"]


def test_the_scalar_tail_of_an_activation_stays_for_onnxruntime_to_fuse():
    """GELU as exported (x * (1 + erf(x / sqrt 2)) * 0.5): folding the 0.5 into the next Conv would
    break onnxruntime's Gelu fusion; a per-channel scale after a Relu folds."""
    b = GraphBuilder(seed=23)
    x = b.input([1, 8, 6, 6])
    erf = b.op("Erf", [b.op("Div", [x, b.const(np.array(1.4142135), "sqrt2")])])
    gelu = b.op("Mul", [b.op("Mul", [x, b.op("Add", [erf, b.const(np.array(1.0), "one")])]), b.const(np.array(0.5), "half")])
    after_gelu = b.conv(gelu, 8, 8, 1, pad=0)
    scaled = b.op("Mul", [b.op("Relu", [after_gelu]), b.const(b.rng.uniform(0.5, 2, (1, 8, 1, 1)), "s")])
    model = b.model([b.conv(scaled, 8, 8, 1, pad=0)])
    optimized, report = _folded(model)
    assert count(optimized, "Mul") == count(model, "Mul") - 1 and report.regions_folded == 1
    assert any(n.op_type == "Mul" and "half" in n.input[1] for n in optimized.graph.node)


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
    optimized, report = _folded(model)
    assert report.qdq_pairs == 2 and report.dequantized_constants == 1
    assert report.blocks_folded == 1 and "BLOCKING_OP" in _codes(report) and "NON_CONSTANT" in _codes(report)
    assert count(optimized, "QuantizeLinear") == 2 and count(optimized, "DequantizeLinear") == 3
    assert w8 in {t.name for t in optimized.graph.initializer}
    assert report.to_dict()["qdq"] == {"pairs": 2, "dequantized_constants": 1}
