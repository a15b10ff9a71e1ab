"""A float16 fold must not lose bits the block keeps: folded weights pushed below float16's normal range
(6.1e-5) by a small scale are refused (PRECISION), and the verdict fails a candidate that lost them."""

import numpy as np
import onnx
import pytest
from helpers.builders import GraphBuilder
from helpers.checks import assert_same_function, count
from onnx import numpy_helper

import qarep_onnx
from qarep_onnx.runtime.noise import OneUlp


def _codes(report):
    return [r.code for r in report.refusals]


def _conv_bn(gamma, dtype=np.float16, seed=3, weight_scale=1.0):
    """Conv 16->16 3x3 then a BatchNorm whose scale per channel is ``gamma`` (its shift a tenth of it)."""
    b = GraphBuilder(seed=seed, dtype=dtype)
    x = b.input([1, 16, 8, 8])
    y = b.conv(x, 16, 16, 3)
    if weight_scale != 1.0:
        y = b.op("Mul", [y, b.const(np.full((1, 16, 1, 1), weight_scale), "s")])
    gamma = np.broadcast_to(np.asarray(gamma, dtype=np.float64), (16,))
    params = [b.const(gamma, "gamma"), b.const(gamma * 0.1, "beta"), b.const(np.zeros(16), "mean"), b.const(np.ones(16), "var")]
    return b.model([b.op("BatchNormalization", [y, *params], epsilon=1e-5)])


def _dense_scale(scale):
    """MatMul [1,8,32]x[32,32] then a per-feature Mul: a Linear with its affine."""
    b = GraphBuilder(seed=4, dtype=np.float16)
    x = b.input([1, 8, 32])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((32, 32)) * 0.3, "w")])
    return b.model([b.op("Mul", [y, b.const(np.full(32, scale), "scale")])])


def _conv_transpose_scale(scale):
    b = GraphBuilder(seed=5, dtype=np.float16)
    x = b.input([1, 8, 6, 6])
    y = b.op("ConvTranspose", [x, b.const(b.rng.standard_normal((8, 8, 2, 2)) * 0.3, "w")], kernel_shape=[2, 2], strides=[2, 2])
    return b.model([b.op("Mul", [y, b.const(np.full((1, 8, 1, 1), scale), "scale")])])


@pytest.mark.parametrize("build", [_conv_bn, _dense_scale, _conv_transpose_scale], ids=["conv", "matmul", "conv_transpose"])
def test_a_scale_that_pushes_float16_weights_below_the_normal_range_is_refused(build):
    model = build(1e-5)
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 0 and _codes(report) == ["PRECISION"]
    assert "float16's normal range" in report.refusals[0].message and "float32" in report.refusals[0].message
    assert optimized.graph.SerializeToString() == model.graph.SerializeToString()


@pytest.mark.parametrize("build", [_conv_bn, _dense_scale, _conv_transpose_scale], ids=["conv", "matmul", "conv_transpose"])
def test_a_small_scale_that_keeps_float16_weights_normal_still_folds(build):
    model = build(1e-3)
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 1 and not report.refusals
    assert_same_function(model, optimized)


def test_one_channel_below_the_normal_range_is_enough_to_refuse():
    gamma = np.ones(16)
    gamma[11] = 2e-6
    optimized, report = qarep_onnx.optimize(_conv_bn(gamma))
    assert _codes(report) == ["PRECISION"] and "output channel 11" in report.refusals[0].message


def test_weights_that_were_already_that_coarse_fold():
    """Conv weights of about 1e-5 (below the normal range already), BatchNorm scale 1: the fold keeps
    what the block kept, so it folds."""
    model = _conv_bn(1.0)
    for t in model.graph.initializer:
        if t.name.startswith("w"):
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t).astype(np.float64) * 3e-5).astype(np.float16), t.name))
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 1 and not report.refusals
    assert_same_function(model, optimized)


def test_float32_weights_that_small_fold():
    """float32's normal range reaches 1.2e-38: the same block in float32 folds."""
    model = _conv_bn(1e-6, dtype=np.float32)
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 1 and count(optimized, "BatchNormalization") == 0
    assert_same_function(model, optimized)


def _lossy_candidate(model: onnx.ModelProto, gamma: float) -> onnx.ModelProto:
    """What a fold without the precision check writes: the Conv's weight times the BatchNorm's scale,
    rounded to float16 (subnormal), and the folded bias."""
    values = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    conv, bn = model.graph.node
    w, bias = values[conv.input[1]], values[conv.input[2]]
    scale = values[bn.input[1]] / np.sqrt(values[bn.input[4]] + 1e-5)
    folded_w = (w * scale[:, None, None, None]).astype(np.float16)
    folded_b = (scale * (bias - values[bn.input[3]]) + values[bn.input[2]]).astype(np.float16)
    candidate = onnx.ModelProto()
    candidate.CopyFrom(model)
    del candidate.graph.node[1], candidate.graph.initializer[:]
    candidate.graph.initializer.extend([numpy_helper.from_array(folded_w, "fw"), numpy_helper.from_array(folded_b, "fb")])
    node = candidate.graph.node[0]
    node.input[1], node.input[2], node.output[0] = "fw", "fb", bn.output[0]
    return candidate


def test_the_verdict_fails_a_fold_that_lost_its_bits_below_the_normal_range():
    """The scale itself is subnormal in float16: one ulp of it is a 1.5% step, and a floor measured by
    moving it so would pass the lossy fold; subnormal weights stay put in the floor's measurement."""
    model = _conv_bn(1e-6)
    result = qarep_onnx.validate(model, _lossy_candidate(model, 1e-6))
    assert not result.passed
    again = qarep_onnx.validate(model, model)
    assert again.passed


def test_one_ulp_moves_normal_float16_values_and_leaves_subnormal_ones():
    values = np.array([1.0, -0.5, 3e-5, -1e-6, 0.0, 6.2e-5], dtype=np.float16)
    moved = OneUlp(0).moved(numpy_helper.from_array(values, "t"))
    normal = np.abs(values) >= np.finfo(np.float16).tiny
    assert np.all(moved[normal] != values[normal]) and np.array_equal(moved[~normal], values[~normal])
    assert np.all(np.abs(moved[normal].astype(np.float64) - values[normal]) <= np.spacing(np.abs(values[normal])))
