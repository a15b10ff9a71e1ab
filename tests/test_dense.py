"""Gemm and MatMul leaves: every transA/transB/alpha/beta, per-feature biases, tokens, and what is refused."""

import numpy as np
import pytest
from helpers.bodies import in_function, in_if, in_loop
from helpers.builders import GraphBuilder
from helpers.checks import assert_same_function, count
from helpers.linear import batch_norm_1d, codes, folded, gemm
from onnx import TensorProto

import qarep_onnx
from qarep_onnx.graph.walk import all_nodes

F = TensorProto.FLOAT


# -- Gemm ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0), (-1.5, 0.25)])
@pytest.mark.parametrize("c_shape", [(None,), "n", "1n", "scalar", "one"])
def test_gemm_then_batch_norm_and_affines_fold_into_one_gemm(trans_b, alpha, beta, c_shape):
    b = GraphBuilder(seed=1)
    x = b.input([4, 12])
    y = gemm(b, x, 12, 6, trans_b=trans_b, alpha=alpha, beta=beta, c_shape=c_shape)
    y = batch_norm_1d(b, y, 6)
    y = b.op("Mul", [y, b.const(b.rng.uniform(0.5, 2, (6,)), "s")])
    y = b.op("Sub", [y, b.const(b.rng.standard_normal((1, 6)), "o")])
    model = b.model([b.op("Relu", [y])])
    optimized, report = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm", "Relu"]
    assert report.folds[0].op_types == ("Gemm",) and report.folds[0].removed_op_types[0] == "Gemm"


def test_transposed_input_gemm_folds_what_follows_it():
    b = GraphBuilder(seed=2)
    x = b.input([12, 4])  # transA: features on the first axis
    y = gemm(b, x, 12, 6, trans_a=1, trans_b=0, c_shape="n")
    model = b.model([batch_norm_1d(b, y, 6)])
    optimized, _ = folded(model)
    (node,) = optimized.graph.node
    assert node.op_type == "Gemm" and {a.name: a.i for a in node.attribute}["transA"] == 1


def test_a_gemm_bias_that_is_not_per_feature_is_refused():
    b = GraphBuilder(seed=3)
    x = b.input([4, 12])
    w = b.const(b.rng.standard_normal((12, 6)), "B")
    c = b.const(b.rng.standard_normal((4, 6)), "C")  # one bias per row and feature
    model = b.model([batch_norm_1d(b, b.op("Gemm", [x, w, c]), 6)])
    optimized, report = folded(model)
    assert report.regions_folded == 0 and "NOT_PER_CHANNEL" in codes(report)
    assert count(optimized, "BatchNormalization") == 1


# -- MatMul ---------------------------------------------------------------------------------------------


def test_matmul_add_batch_norm_on_a_2d_input_becomes_one_gemm():
    b = GraphBuilder(seed=4)
    x = b.input([3, 10])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((10, 7)), "W")])
    y = b.op("Add", [y, b.const(b.rng.standard_normal(7), "bias")])
    model = b.model([batch_norm_1d(b, y, 7)])
    optimized, _ = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"]


def test_matmul_on_tokens_folds_a_per_feature_affine_into_matmul_and_add():
    b = GraphBuilder(seed=5)
    x = b.input([1, 6, 16])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((16, 24)), "W")])
    y = b.op("Add", [y, b.const(b.rng.standard_normal(24), "bias")])
    y = b.op("Mul", [y, b.const(b.rng.uniform(0.5, 1.5, 24), "gamma")])
    y = b.op("Add", [y, b.const(b.rng.standard_normal((1, 1, 24)), "beta")])
    model = b.model([b.op("Relu", [y])])
    optimized, report = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["MatMul", "Add", "Relu"]
    assert report.folds[0].op_types == ("MatMul", "Add")


def test_a_scale_after_a_bias_free_matmul_keeps_it_one_matmul():
    b = GraphBuilder(seed=6)
    x = b.input([2, 5, 8])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((8, 8)), "W")])
    model = b.model([b.op("Mul", [y, b.const(np.array(0.5), "half")])])
    optimized, _ = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["MatMul"]


def test_batch_norm_after_a_token_matmul_normalizes_the_wrong_axis_and_is_refused():
    b = GraphBuilder(seed=7)
    x = b.input([2, 6, 16])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((16, 6)), "W")])  # [2, 6, 6]: BN's axis 1 is the tokens
    model = b.model([batch_norm_1d(b, y, 6)])
    optimized, report = folded(model)
    assert report.regions_folded == 0 and "NOT_PER_CHANNEL" in codes(report)
    assert any("axis 1" in r.message and "axis 2" in r.message for r in report.refusals)


def test_a_constant_multiplied_from_the_left_is_no_leaf():
    b = GraphBuilder(seed=8)
    x = b.input([6, 4])
    y = b.op("MatMul", [b.const(b.rng.standard_normal((5, 6)), "A"), x])
    model = b.model([b.op("Mul", [y, b.const(b.rng.uniform(0.5, 1.5, (4,)), "s")])])
    optimized, report = folded(model)
    assert report.regions_folded == 0 and count(optimized, "Mul") == 1


@pytest.mark.parametrize("where", ["function", "loop", "if"])
def test_a_batch_norm_after_a_token_matmul_of_unknown_rank_is_refused(where):
    b = GraphBuilder(seed=61)
    x = b.input([2, 3, 3])  # as many tokens as features: a BatchNorm of the tokens looks like one of the features
    y = b.batch_norm(b.op("MatMul", [x, b.const(b.rng.standard_normal((3, 3)) * 0.4, "w")]), 3)
    model = {"function": in_function, "loop": in_loop, "if": in_if}[where](b.model([b.op("Mul", [y, b.const(2.0, "two")])]))
    optimized, report = qarep_onnx.optimize(model)
    assert count_all(optimized, "BatchNormalization") == count_all(model, "BatchNormalization")
    assert any(r.code == "NOT_PER_CHANNEL" and "rank is not known" in r.message for r in report.refusals)
    assert_same_function(model, optimized)


def count_all(model, op_type):
    """Nodes of ``op_type`` in every graph, body and function."""
    return sum(n.op_type == op_type for n in all_nodes(model))
