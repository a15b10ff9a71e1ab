"""A per-channel affine in front of a leaf, taken over where exact and refused with its reason where not."""

import numpy as np
import pytest
from helpers.builders import GraphBuilder
from helpers.checks import assert_same_function, count
from helpers.linear import batch_norm_1d, codes, folded, gemm
from onnx import TensorProto, helper

import qarep_onnx

F = TensorProto.FLOAT


# -- a per-channel affine in front of the leaf ------------------------------------------------------------------


def test_batch_norm_before_an_unpadded_conv_folds_into_it():
    b = GraphBuilder(seed=12)
    x = b.input([1, 8, 6, 6])
    y = b.conv(batch_norm_1d(b, x, 8), 8, 12, 3, pad=0, groups=4)
    model = b.model([b.op("Relu", [y])])
    optimized, report = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Conv", "Relu"] and report.blocks_folded == 0


def test_batch_norm_before_a_padded_conv_is_refused_with_its_reason():
    b = GraphBuilder(seed=13)
    x = b.input([1, 8, 6, 6])
    model = b.model([b.conv(batch_norm_1d(b, x, 8), 8, 8, 3)])
    optimized, report = folded(model)
    assert report.regions_folded == 0 and "PADDED_INPUT_SHIFT" in codes(report)
    assert count(optimized, "BatchNormalization") == 1


def test_a_pure_scale_before_a_padded_conv_folds():
    b = GraphBuilder(seed=14)
    x = b.input([1, 8, 6, 6])
    scaled = b.op("Mul", [x, b.const(b.rng.uniform(0.5, 2, (1, 8, 1, 1)), "s")])
    no_shift = batch_norm_1d(b, scaled, 8, shift=False)
    model = b.model([b.conv(no_shift, 8, 8, 3)])
    optimized, _ = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Conv"]


def test_an_affine_before_a_gemm_folds_into_it():
    b = GraphBuilder(seed=15)
    x = b.input([3, 10])
    y = b.op("Add", [b.op("Mul", [x, b.const(b.rng.uniform(0.5, 2, (10,)), "t")]), b.const(b.rng.standard_normal(10), "s")])
    model = b.model([gemm(b, y, 10, 4, c_shape="n")])
    optimized, _ = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"]


@pytest.mark.parametrize("kernel, stride, shift, folds", [(3, 2, True, False), (3, 2, False, True), (1, 1, True, True)])
def test_an_affine_before_a_conv_transpose_folds_only_where_exact(kernel, stride, shift, folds):
    b = GraphBuilder(seed=16)
    x = b.input([1, 6, 4, 4])
    y = batch_norm_1d(b, x, 6, shift=shift)
    w = b.const(b.rng.standard_normal((6, 6, kernel, kernel)), "w")
    model = b.model([b.op("ConvTranspose", [y, w], strides=[stride] * 2)])
    optimized, report = folded(model)
    assert (count(optimized, "BatchNormalization") == 0) == folds
    assert ("PADDED_INPUT_SHIFT" in codes(report)) == (not folds)


def _learnable_affine(b, x, channels):
    """PP-LCNet's learnable affine after its activation: HardSwish, then one scalar Mul and one scalar Add."""
    act = b.op("HardSwish", [x])
    return b.op("Add", [b.op("Mul", [act, b.const(np.array(1.3), "a")]), b.const(np.array(0.2), "b")])


def test_a_scalar_affine_after_an_activation_folds_into_an_unpadded_conv():
    b = GraphBuilder(seed=71)
    x = b.input([1, 8, 6, 6])
    model = b.model([b.conv(_learnable_affine(b, x, 8), 8, 16, 1, pad=0)])
    optimized, report = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["HardSwish", "Conv"] and not report.refusals


def test_a_scalar_affine_with_a_shift_before_a_padded_depthwise_conv_is_refused_with_its_reason():
    b = GraphBuilder(seed=72)
    x = b.input([1, 8, 6, 6])
    model = b.model([b.conv(_learnable_affine(b, x, 8), 8, 8, 3, groups=8)])
    optimized, report = folded(model)
    assert count(optimized, "Mul") == 1 and count(optimized, "Add") == 1
    assert codes(report) == {"PADDED_INPUT_SHIFT"}


def test_an_affine_that_may_broadcast_its_input_is_not_taken_over():
    """x [1, c, 6, 6] * t[1, 4, 1, 1] -> Conv: with c = 1 the Mul makes four channels of one; the Conv alone
    would read one.  Only a known channel count lets the Conv take the scale over."""
    b = GraphBuilder(seed=73)
    b.inputs.append(helper.make_tensor_value_info("x", F, [1, "c", 6, 6]))
    scaled = b.op("Mul", [b.op("Abs", ["x"]), b.const(b.rng.uniform(0.5, 2, (1, 4, 1, 1)), "t")])
    model = b.model([b.conv(scaled, 4, 8, 1, pad=0)])
    optimized, report = qarep_onnx.optimize(model)
    assert count(optimized, "Mul") == 1 and codes(report) == {"NOT_PER_CHANNEL"}
    assert_same_function(model, optimized, shapes={"x": (1, 1, 6, 6)})
    shaped, _ = qarep_onnx.optimize(model, input_shapes={"x": (1, 4, 6, 6)})
    assert count(shaped, "Mul") == 0
