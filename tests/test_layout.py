"""Reshape, Flatten, Squeeze and Unsqueeze that keep the channels: a per-channel affine in front of them moves
behind them, and the leaf that reads them takes it over (tf2onnx's Keras Dense head reads a BatchNorm through
``Reshape [N,C,1,1] -> [N,C]``)."""

import onnx
import pytest
from helpers.builders import GraphBuilder
from helpers.checks import assert_same_function, count

import qarep_onnx


def _fold(model):
    optimized, report = qarep_onnx.optimize(model)
    assert_same_function(model, optimized)
    onnx.checker.check_model(optimized, full_check=True)
    again, second = qarep_onnx.optimize(optimized)
    assert second.regions_folded == 0 and again.SerializeToString() == optimized.SerializeToString()
    return optimized, report


def _keras_dense_head(b, layout, channels=16, classes=10):
    """GlobalAveragePool -> BatchNorm -> a layout change to [N, C] -> MatMul + Add -> Softmax."""
    x = b.input([2, channels, 5, 5])
    pooled = b.op("GlobalAveragePool", [x])
    normed = b.batch_norm(pooled, channels)
    if layout == "Reshape":
        flat = b.op("Reshape", [normed, b.ints([-1, channels], "shape")])
    elif layout == "Flatten":
        flat = b.op("Flatten", [normed], axis=1)
    else:
        flat = b.op("Squeeze", [normed, b.ints([2, 3], "axes")])
    logits = b.op("Add", [b.op("MatMul", [flat, b.const(b.rng.standard_normal((channels, classes)) * 0.2, "W")]),
                          b.const(b.rng.standard_normal(classes) * 0.1, "bias")])
    return b.model([b.op("Softmax", [logits])])


@pytest.mark.parametrize("layout", ["Reshape", "Flatten", "Squeeze"])
def test_a_batch_norm_read_through_a_layout_change_folds_into_the_dense_layer(layout):
    b = GraphBuilder(seed=41)
    model = _keras_dense_head(b, layout)
    optimized, report = _fold(model)
    assert count(optimized, "BatchNormalization") == 0 and count(optimized, layout) == 1
    assert [n.op_type for n in optimized.graph.node] == ["GlobalAveragePool", layout, "Gemm", "Softmax"]
    layout_node = next(n for n in optimized.graph.node if n.op_type == layout)
    assert layout_node.input[0] == optimized.graph.node[0].output[0]  # it reads the pooled tensor now
    assert report.regions_folded == 1 and "BatchNormalization" in report.folds[0].removed_op_types


def test_a_per_feature_affine_unsqueezed_in_front_of_a_conv_folds_into_it():
    b = GraphBuilder(seed=42)
    x = b.input([3, 8])
    scaled = b.op("Add", [b.op("Mul", [x, b.const(b.rng.uniform(0.5, 2, 8), "t")]), b.const(b.rng.standard_normal(8), "s")])
    image = b.op("Unsqueeze", [scaled, b.ints([2, 3], "axes")])
    model = b.model([b.op("Relu", [b.conv(image, 8, 6, 1, pad=0)])])
    optimized, _ = _fold(model)
    assert [n.op_type for n in optimized.graph.node] == ["Unsqueeze", "Conv", "Relu"]


def test_a_layout_change_that_splits_the_channels_keeps_the_batch_norm():
    b = GraphBuilder(seed=43)
    x = b.input([1, 8, 2, 2])
    regrouped = b.op("Reshape", [b.batch_norm(x, 8), b.ints([1, 4, 8], "shape")])  # channels split
    model = b.model([b.op("MatMul", [regrouped, b.const(b.rng.standard_normal((8, 3)), "W")])])
    optimized, report = _fold(model)
    assert count(optimized, "BatchNormalization") == 1 and report.regions_folded == 0


def test_a_layout_change_read_twice_stays_where_it_is():
    b = GraphBuilder(seed=44)
    x = b.input([2, 6, 1, 1])
    flat = b.op("Flatten", [b.batch_norm(x, 6)], axis=1)
    w = b.const(b.rng.standard_normal((6, 4)), "W")
    model = b.model([b.op("MatMul", [flat, w]), b.op("Relu", [flat])])
    optimized, report = _fold(model)
    assert count(optimized, "BatchNormalization") == 1 and report.regions_folded == 0
