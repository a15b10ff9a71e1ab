"""Parallel linear heads over one input merge (RepViT's averaged classifier); dtypes, functions, activations."""

import numpy as np
import onnx
import pytest
from helpers.builders import GraphBuilder
from helpers.checks import count
from helpers.linear import batch_norm_1d, folded, gemm
from onnx import TensorProto, helper

F = TensorProto.FLOAT


# -- parallel heads -------------------------------------------------------------------------------------------------


def _repvit_head(seed=19, dtype=np.float32):
    """(Gemm(BN1(x)) + Gemm(BN2(x))) / 2: RepViT's classifier with its distillation head."""
    b = GraphBuilder(seed=seed, dtype=dtype)
    x = b.input([2, 32])
    heads = [gemm(b, batch_norm_1d(b, x, 32), 32, 10, c_shape="n") for _ in range(2)]
    return b.model([b.op("Div", [b.op("Add", heads), b.const(np.array(2.0), "two")])])


def test_averaged_heads_with_their_batch_norms_merge_into_one_gemm():
    optimized, report = folded(_repvit_head())
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"]
    assert report.blocks_folded == 1 and report.folds[0].branches == 2


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_heads_keep_their_dtype(dtype):
    model = _repvit_head(dtype=dtype)
    optimized, _ = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"]
    assert {t.data_type for t in optimized.graph.initializer} == {onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))}


def test_a_head_read_elsewhere_is_not_merged():
    model = _repvit_head()
    first_head = next(n for n in model.graph.node if n.op_type == "Gemm").output[0]
    model.graph.output.append(helper.make_tensor_value_info(first_head, F, [2, 10]))
    optimized, report = folded(model)
    assert report.blocks_folded == 0 and count(optimized, "Gemm") == 2


def test_a_residual_linear_layer_merges_with_its_identity():
    b = GraphBuilder(seed=20)
    x = b.input([4, 16])
    model = b.model([b.op("Add", [gemm(b, x, 16, 16, c_shape="n"), x])])
    optimized, report = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"] and report.folds[0].branches == 2


def test_keep_post_bn_keeps_the_batch_norm_after_a_gemm():
    b = GraphBuilder(seed=21)
    x = b.input([4, 16])
    y = batch_norm_1d(b, gemm(b, batch_norm_1d(b, x, 16), 16, 8, c_shape="n"), 8)
    optimized, report = folded(b.model([y]), keep_post_bn=True)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm", "BatchNormalization"]


def test_a_gemm_block_inside_a_function_folds():
    b = GraphBuilder(seed=22, constants="constant")
    y = batch_norm_1d(b, gemm(b, "fx", 16, 8, c_shape="n"), 8)
    function = helper.make_function("ex", "Head", ["fx"], [y], b.nodes, [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Head", ["x"], ["y"], domain="ex")], "g",
                              [helper.make_tensor_value_info("x", F, [4, 16])], [helper.make_tensor_value_info("y", F, [4, 8])])
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ex", 1)])
    model.ir_version = 8
    optimized, report = folded(model)
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
    optimized, report = folded(model)
    assert count(optimized, "Mul") == count(model, "Mul") - 1 and report.regions_folded == 1
    assert any(n.op_type == "Mul" and "half" in n.input[1] for n in optimized.graph.node)
