"""Mean of branches over one input: a sum scaled by 1/n, folded like any other sum."""

import numpy as np
import onnx
import pytest
from helpers.builders import GraphBuilder
from helpers.checks import assert_same_function, count

import qarep_onnx


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_the_mean_of_a_3x3_a_1x1_and_the_identity_becomes_one_conv(dtype):
    b = GraphBuilder(seed=31, dtype=dtype)
    x = b.input([1, 8, 10, 10])
    branches = [b.batch_norm(b.conv(x, 8, 8, 3, bias=False), 8), b.conv(x, 8, 8, 1, pad=0), x]
    model = b.model([b.op("Relu", [b.op("Mean", branches)])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1 and report.folds[0].branches == 3
    assert count(optimized, "Conv") == 1 and count(optimized, "Mean") == count(optimized, "BatchNormalization") == 0
    assert_same_function(model, optimized)
    onnx.checker.check_model(optimized, full_check=True)


def test_the_mean_of_a_branch_and_a_constant_is_an_affine_of_the_branch():
    b = GraphBuilder(seed=32)
    x = b.input([1, 4, 6, 6])
    y = b.op("Mean", [b.conv(x, 4, 4, 3), b.const(b.rng.standard_normal((1, 4, 1, 1)), "offset")])
    model = b.model([b.op("Relu", [y])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 1 and [n.op_type for n in optimized.graph.node] == ["Conv", "Relu"]
    assert_same_function(model, optimized)


def test_a_mean_of_different_inputs_is_where_a_block_ends():
    b = GraphBuilder(seed=33)
    x, z = b.input([1, 4, 6, 6]), b.input([1, 4, 6, 6], "z")
    model = b.model([b.op("Mean", [b.conv(x, 4, 4, 3), b.conv(z, 4, 4, 3)])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 0 and not report.refusals and count(optimized, "Mean") == 1
