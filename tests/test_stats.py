"""Parameters and FLOPs before and after: counted inside functions and subgraphs, unknown where they depend
on control flow."""

import numpy as np
import onnx
from helpers.builders import BlockSpec, GraphBuilder, qarep_block
from onnx import TensorProto, helper, numpy_helper

import qarep_onnx
from qarep_onnx.stats import model_stats, parameter_count, tensor_shapes


def _function_model():
    b = GraphBuilder(seed=15, constants="constant")
    qarep_block(b, "fx", BlockSpec(alpha="scalar", bn_3x3="separate"))
    function = helper.make_function("ex", "Block", ["fx"], [b.nodes[-1].output[0]], b.nodes, [helper.make_opsetid("", 17)])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])
    graph = helper.make_graph([helper.make_node("Block", ["x"], ["y"], domain="ex")], "g", [x], [y])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ex", 1)])
    model.ir_version = 8
    return model


def test_parameters_and_flops_of_a_block_inside_a_function_are_counted():
    model = _function_model()
    _, report = qarep_onnx.optimize(model)
    params, flops = report.to_dict()["parameters"], report.to_dict()["flops"]
    # 3x3 without bias (576) + 1x1 (64 + 8) + alpha + two BNs (4 x 8 each) before; one 3x3 with bias after
    assert params == {"before": 576 + 64 + 8 + 1 + 64, "after": 576 + 8}
    assert flops["before"] > flops["after"] == 2 * 64 * 576  # 64 positions x 576 MACs


def test_flops_of_a_loop_body_with_convolutions_are_unknown_but_parameters_are_counted():
    outer = GraphBuilder(seed=16)
    x = outer.input([1, 8, 8, 8])
    outer.initializers.append(numpy_helper.from_array(np.array(2, np.int64), "trips"))
    outer.initializers.append(numpy_helper.from_array(np.array(True), "cond_true"))
    body = GraphBuilder(seed=17)
    out = qarep_block(body, x, BlockSpec())
    body.nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    body_graph = helper.make_graph(
        body.nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info(out, 1, None)],
        body.initializers,
    )
    model = outer.model([outer.op("Loop", ["trips", "cond_true"], body=body_graph)])
    stats = model_stats(model, tensor_shapes(model))
    assert stats.flops is None
    assert stats.parameters == parameter_count(model) > 576
    _, report = qarep_onnx.optimize(model)
    assert report.to_dict()["flops"] == {"before": None, "after": None}
    assert report.stats_after.parameters < report.stats_before.parameters


def test_conv_transpose_and_transposed_gemm_flops():
    b = GraphBuilder(seed=1)
    x = b.input([1, 4, 5, 5])
    w = b.const(np.ones((4, 6, 3, 3)), "w")
    y = b.op("ConvTranspose", [x, w], strides=[2, 2])
    model = b.model([y])
    stats = model_stats(model, tensor_shapes(model))
    assert stats.flops == 2 * (4 * 5 * 5) * (6 * 3 * 3)
    g = GraphBuilder(seed=2)
    a = g.input([7, 3])
    gemm = g.op("Gemm", [a, g.const(np.ones((7, 5)), "b")], transA=1)
    model = g.model([gemm])
    assert model_stats(model, tensor_shapes(model)).flops == 2 * 3 * 5 * 7
    onnx.checker.check_model(model)


def _token_linear(batch):
    """MatMul [batch, 8, 32] x [32, 32], its bias, a per-feature scale, Relu: folds into a MatMul and an Add."""
    b = GraphBuilder(seed=4)
    b.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, 32]))
    y = b.op("MatMul", ["x", b.const(b.rng.standard_normal((32, 32)), "w")])
    y = b.op("Mul", [b.op("Add", [y, b.const(b.rng.standard_normal(32), "b")]), b.const(b.rng.standard_normal(32), "s")])
    return b.model([b.op("Relu", [y])])


def test_flops_after_a_matmul_and_add_fold_are_counted():
    """The fold writes a MatMul whose output is a new tensor: its shape is inferred on the folded model."""
    _, report = qarep_onnx.optimize(_token_linear(1))
    matmul, elementwise = 2 * 8 * 32 * 32, 8 * 32  # the Relu is not counted; Add and Mul are, then the Add
    assert report.to_dict()["flops"] == {"before": matmul + 2 * elementwise, "after": matmul + elementwise}


def test_flops_after_a_matmul_and_add_fold_use_the_given_shapes():
    _, unknown = qarep_onnx.optimize(_token_linear("batch"))
    assert unknown.to_dict()["flops"] == {"before": None, "after": None}
    _, report = qarep_onnx.optimize(_token_linear("batch"), input_shapes={"x": (2, 8, 32)})
    assert report.to_dict()["flops"] == {"before": 2 * (2 * 8 * 32 * 32 + 2 * 8 * 32), "after": 2 * (2 * 8 * 32 * 32 + 8 * 32)}
