"""Folding hand-built blocks: every QARepVGG option and export form, and every refusal."""

import itertools

import numpy as np
import onnx
import pytest
from helpers.builders import BlockSpec, GraphBuilder, qarep_block, qarep_model
from helpers.checks import assert_same_function, count
from onnx import TensorProto, helper

import qarep_onnx

BLOCK_OPTIONS = {
    "post_bn": [True, False],
    "alpha": ["none", "one", "scalar", "channel"],
    "alpha_first": [False, True],
    "bias_1x1": [True, False],
    "identity": [True, False],
}


def _specs():
    keys = list(BLOCK_OPTIONS)
    for values in itertools.product(*BLOCK_OPTIONS.values()):
        yield BlockSpec(**dict(zip(keys, values)))


@pytest.mark.parametrize("spec", list(_specs()), ids=str)
def test_every_block_option_folds_to_one_conv(spec):
    model = qarep_model(spec)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1
    assert count(optimized, "Conv") == 1
    assert {n.op_type for n in optimized.graph.node} == {"Conv", "Relu"}
    assert_same_function(model, optimized)


@pytest.mark.parametrize(
    "spec",
    [
        BlockSpec(groups=2),
        BlockSpec(groups=4, dilation=2),
        BlockSpec(groups=8, alpha="channel"),  # depthwise
        BlockSpec(stride=2, identity=False),
        BlockSpec(channels_out=16, stride=2, groups=2, alpha="scalar"),
        BlockSpec(channels_out=16, identity=False, zero_add=False),
        BlockSpec(dilation=2, stride=2, post_bn=False),
        BlockSpec(bn_3x3="separate", alpha="scalar", alpha_first=True),
        BlockSpec(add_order=(2, 1, 0), nesting="right"),
        BlockSpec(add_order=(1, 2, 0), nesting="sum"),
        BlockSpec(add_order=(2, 0, 1), nesting="left", bn_3x3="separate"),
        BlockSpec(activation="Sigmoid"),
        BlockSpec(activation=""),
    ],
    ids=str,
)
@pytest.mark.parametrize("constants", ["initializer", "constant", "identity"])
def test_geometry_and_export_forms(spec, constants):
    model = qarep_model(spec, constants=constants)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1 and count(optimized, "Conv") == 1
    assert not any(n.op_type in ("Constant", "Identity") for n in optimized.graph.node)
    (conv,) = [n for n in optimized.graph.node if n.op_type == "Conv"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    assert attrs["group"] == spec.groups and attrs["strides"] == [spec.stride] * 2
    assert attrs["dilations"] == [spec.dilation] * 2 and attrs["kernel_shape"] == [3, 3]
    assert_same_function(model, optimized)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_half_and_double_models_keep_their_dtype(dtype):
    model = qarep_model(BlockSpec(alpha="scalar", bn_3x3="separate"), dtype=dtype)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1
    assert {t.data_type for t in optimized.graph.initializer} == {model.graph.initializer[0].data_type}
    assert_same_function(model, optimized)


def test_keep_post_bn_leaves_the_batch_norm_after_the_sum():
    model = qarep_model(BlockSpec(bn_3x3="separate", alpha="scalar"))
    optimized, report = qarep_onnx.optimize(model, keep_post_bn=True)
    assert [n.op_type for n in optimized.graph.node] == ["Conv", "BatchNormalization", "Relu"]
    assert report.blocks_folded == 1
    assert_same_function(model, optimized)


def test_stacked_blocks_and_a_network_fold_independently():
    b = GraphBuilder(seed=3)
    x = b.input([1, 8, 12, 12])
    y = qarep_block(b, x, BlockSpec(channels_out=16, stride=2, identity=False, alpha="one"))
    y = qarep_block(b, y, BlockSpec(channels_in=16, channels_out=16, alpha="scalar"))
    y = qarep_block(b, y, BlockSpec(channels_in=16, channels_out=16, groups=4, bn_3x3="separate"))
    head = b.conv(y, 16, 4, 1, pad=0)
    model = b.model([head, y])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 3 and count(optimized, "Conv") == 4
    assert_same_function(model, optimized)


def test_second_run_changes_nothing():
    model = qarep_model(BlockSpec(alpha="scalar", bn_3x3="separate"), constants="identity")
    once, _ = qarep_onnx.optimize(model)
    twice, report = qarep_onnx.optimize(once)
    assert report.regions_folded == 0
    assert twice.SerializeToString() == once.SerializeToString()


# -- refusals: fold nothing rather than something wrong ------------------------------------


def _refusal_codes(report):
    return {r.code for r in report.refusals}


def _block_with(modify):
    """A 3x3 Conv-BN and a 1x1 Conv over x, finished by ``modify(b, x, y3, y1)``; returns the model."""
    b = GraphBuilder(seed=5)
    x = b.input([1, 8, 8, 8])
    y3 = b.batch_norm(b.conv(x, 8, 8, 3, bias=False), 8)
    y1 = b.conv(x, 8, 8, 1, pad=0)
    return b.model(modify(b, x, y3, y1))


def _sum_relu(b, *terms):
    s = terms[0]
    for t in terms[1:]:
        s = b.op("Add", [s, t])
    return b.op("Relu", [b.batch_norm(s, 8)])


def test_fan_out_of_a_branch_is_refused_and_the_function_kept():
    model = _block_with(lambda b, x, y3, y1: [b.op("Add", [_sum_relu(b, y3, y1, x), y3])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and "FAN_OUT" in _refusal_codes(report)
    assert count(optimized, "Add") == count(model, "Add")
    assert_same_function(model, optimized)


def test_graph_output_inside_a_block_is_refused():
    model = _block_with(lambda b, x, y3, y1: [_sum_relu(b, y3, y1, x), y3])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and "GRAPH_OUTPUT" in _refusal_codes(report)
    assert [o.name for o in optimized.graph.output] == [o.name for o in model.graph.output]
    assert_same_function(model, optimized)


def test_non_constant_weight_is_refused():
    b = GraphBuilder(seed=6)
    x = b.input([1, 8, 8, 8])
    w = b.input([8, 8, 1, 1], name="w1")
    y3 = b.conv(x, 8, 8, 3)
    y1 = b.op("Conv", [x, w], kernel_shape=[1, 1])
    model = b.model([_sum_relu(b, y3, y1, x)])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and "NON_CONSTANT" in _refusal_codes(report)
    assert count(optimized, "Conv") == 2
    assert_same_function(model, optimized)


def test_initializer_overridable_by_an_input_is_not_a_constant():
    model = qarep_model(BlockSpec())
    weight = model.graph.initializer[0]
    model.graph.input.append(onnx.helper.make_tensor_value_info(weight.name, weight.data_type, list(weight.dims)))
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and "NON_CONSTANT" in _refusal_codes(report)


def test_misaligned_pads_are_refused():
    def modify(b, x, y3, y1):
        shifted = b.conv(x, 8, 8, 3, pads=[2, 2, 0, 0])
        return [_sum_relu(b, y3, shifted)]

    model = _block_with(modify)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and "MISALIGNED" in _refusal_codes(report)
    assert_same_function(model, optimized)


def test_mul_by_a_c_shaped_constant_broadcasts_along_width_and_is_refused():
    def modify(b, x, y3, y1):
        scaled = b.op("Mul", [y1, b.const(b.rng.uniform(0.5, 1.5, 8))])  # shape [8] == W
        return [_sum_relu(b, y3, scaled, x)]

    model = _block_with(modify)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and "NOT_PER_CHANNEL" in _refusal_codes(report)
    assert_same_function(model, optimized)


def test_cast_inside_a_block_is_refused():
    def modify(b, x, y3, y1):
        c = b.op("Cast", [b.op("Cast", [y1], to=onnx.TensorProto.DOUBLE)], to=onnx.TensorProto.FLOAT)
        return [_sum_relu(b, y3, c, x)]

    model = _block_with(modify)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0
    assert any(r.code == "BLOCKING_OP" and "Cast" in r.message for r in report.refusals)
    assert_same_function(model, optimized)


def test_identity_term_must_be_the_branch_input():
    def modify(b, x, y3, y1):
        return [_sum_relu(b, y3, y1, b.op("Relu", [x]))]

    model = _block_with(modify)
    optimized, report = qarep_onnx.optimize(model)
    # The two conv branches still merge; the Relu(x) term stays outside.
    assert report.blocks_folded == 1 and count(optimized, "Conv") == 1
    assert any(r.code == "BLOCKING_OP" and "Relu" in r.message for r in report.refusals)
    assert_same_function(model, optimized)


def test_batch_norm_in_training_mode_is_not_folded():
    def modify(b, x, y3, y1):
        s = b.op("Add", [b.op("Add", [y3, y1]), x])
        bn = b.batch_norm(s, 8)
        b.nodes[-1].attribute.append(onnx.helper.make_attribute("training_mode", 1))
        return [bn]

    b_model = _block_with(modify)
    optimized, report = qarep_onnx.optimize(b_model)
    assert report.blocks_folded == 1 and count(optimized, "BatchNormalization") == 1
    assert "BN_TRAINING" in _refusal_codes(report)


def test_depthwise_plus_dense_would_cost_more_and_is_refused():
    b = GraphBuilder(seed=7)
    x = b.input([1, 8, 8, 8])
    dw = b.batch_norm(b.conv(x, 8, 8, 3, groups=8, bias=False), 8)
    dense = b.batch_norm(b.conv(x, 8, 8, 1, pad=0, bias=False), 8)
    model = b.model([b.op("Relu", [b.op("Add", [dw, dense])])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and "COST" in _refusal_codes(report)
    assert count(optimized, "Conv") == 2 and count(optimized, "BatchNormalization") == 0
    assert_same_function(model, optimized)


def test_stride_mismatch_and_auto_pad_same_with_stride_are_refused():
    b = GraphBuilder(seed=8)
    x = b.input([1, 8, 8, 8])
    s2 = b.conv(x, 8, 8, 3, stride=2)
    same = b.op("Conv", [x, b.const(b.rng.standard_normal((8, 8, 1, 1)))], strides=[2, 2], auto_pad="SAME_UPPER")
    s1 = b.conv(x, 8, 8, 5, pad=0)  # 8x8 -> 4x4 like the stride-2 3x3, so the Add is valid
    model = b.model([b.op("Add", [s2, same]), b.op("Add", [b.conv(x, 8, 8, 3, stride=2), s1])])
    optimized, report = qarep_onnx.optimize(model)
    assert {"AUTO_PAD", "STRIDE_MISMATCH"} <= _refusal_codes(report)
    assert report.regions_folded == 0
    assert_same_function(model, optimized)


def test_division_by_a_zero_constant_is_not_folded():
    def modify(b, x, y3, y1):
        zero_scale = np.ones(8)
        zero_scale[3] = 0.0
        return [b.op("Div", [b.op("Add", [y3, y1]), b.const(zero_scale.reshape(1, 8, 1, 1))])]

    model = _block_with(modify)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and "DIVISION_BY_ZERO" in _refusal_codes(report)
    assert count(optimized, "Div") == 1


def test_identity_and_inference_dropout_inside_a_block_are_folded_through():
    def modify(b, x, y3, y1):
        passed = b.op("Dropout", [b.op("Identity", [y1]), b.const(np.array(0.3), "ratio")])
        return [_sum_relu(b, y3, passed, x)]

    model = _block_with(modify)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1 and count(optimized, "Conv") == 1 and count(optimized, "Dropout") == 0
    assert_same_function(model, optimized)


def test_dropout_whose_mask_is_used_is_not_folded_through():
    b = GraphBuilder(seed=10)
    x = b.input([1, 8, 8, 8])
    y3 = b.conv(x, 8, 8, 3)
    b.nodes.append(onnx.helper.make_node("Dropout", [b.conv(x, 8, 8, 1, pad=0)], ["dropped", "mask"], name="drop"))
    model = b.model([b.op("Add", [y3, "dropped"]), "mask"])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and count(optimized, "Dropout") == 1
    assert [o.name for o in optimized.graph.output] == [o.name for o in model.graph.output]


@pytest.mark.parametrize("op, copies", [("Add", 2), ("Sum", 3)])
def test_a_tensor_summed_with_itself(op, copies):
    b = GraphBuilder(seed=0)
    x = b.input([1, 4, 6, 6])
    y = b.conv(x, 4, 4, 3)
    model = b.model([b.op(op, [y] * copies)])
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 1 and report.blocks_folded == 0  # one conv, counted once
    assert_same_function(model, optimized)


@pytest.mark.parametrize("rank", [1, 3])
def test_1d_and_3d_blocks_fold(rank):
    rng = np.random.default_rng(rank)
    b = GraphBuilder(seed=rank)
    x = b.input([1, 4] + [6] * rank)

    def conv(k, pad):
        w = b.const(rng.standard_normal((4, 4) + (k,) * rank) * 0.3)
        return b.op("Conv", [x, w, b.const(rng.standard_normal(4))], kernel_shape=[k] * rank, pads=[pad] * (2 * rank))

    s = b.op("Add", [b.op("Add", [conv(3, 1), conv(1, 0)]), x])
    model = b.model([b.op("Relu", [b.batch_norm(s, 4)])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1 and count(optimized, "Conv") == 1
    assert_same_function(model, optimized)


def test_auto_pad_same_with_stride_1_sub_neg_and_constant_first_sub_fold():
    b = GraphBuilder(seed=21)
    x = b.input([1, 8, 7, 7])
    same = b.op("Conv", [x, b.const(b.rng.standard_normal((8, 8, 3, 3)) * 0.3)], auto_pad="SAME_UPPER")
    neg = b.op("Neg", [b.conv(x, 8, 8, 1, pad=0)])
    flipped = b.op("Sub", [b.const(b.rng.standard_normal((8, 1, 1))), b.op("Sub", [same, neg])])
    model = b.model([b.op("Relu", [flipped])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1 and [n.op_type for n in optimized.graph.node] == ["Conv", "Relu"]
    assert_same_function(model, optimized)


def test_average_pool_branch_folds_into_the_kernel():
    b = GraphBuilder(seed=22)
    x = b.input([1, 8, 8, 8])
    pool = b.op("AveragePool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    model = b.model([b.op("Add", [b.op("Add", [b.conv(x, 8, 8, 3), pool]), x])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1 and count(optimized, "AveragePool") == 0
    assert_same_function(model, optimized)


def test_average_pool_excluding_padding_is_refused():
    b = GraphBuilder(seed=23)
    x = b.input([1, 8, 8, 8])
    pool = b.op("AveragePool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)
    model = b.model([b.op("Add", [b.conv(x, 8, 8, 3), pool])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and "POOL_EXCLUDES_PAD" in _refusal_codes(report)
    assert_same_function(model, optimized)


def test_a_fold_that_would_overflow_float16_is_refused():
    b = GraphBuilder(seed=24, dtype=np.float16)
    x = b.input([1, 4, 6, 6])
    y = b.conv(x, 4, 4, 3)
    tiny_var = b.const(np.full(4, 1e-7), "var")  # gamma / sqrt(var + eps) ~ 3e3 times weights up to ~1e2
    big = b.const(np.full((1, 4, 1, 1), 200.0), "scale")
    bn = b.op("BatchNormalization", [b.op("Mul", [y, big]), b.const(np.ones(4)), b.const(np.zeros(4)), b.const(np.zeros(4)), tiny_var], epsilon=1e-7)
    model = b.model([bn])
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 0 and "NON_FINITE" in _refusal_codes(report)
    assert optimized.graph.SerializeToString() == model.graph.SerializeToString()


# -- where a block ends is not a refusal --------------------------------------------------------


def test_a_resnet_residual_is_not_reported_as_a_refusal():
    """Conv-BN-Relu-Conv-BN + x, Relu: the second Conv-BN folds; the Relu ends it; nothing is refused."""
    b = GraphBuilder(seed=31)
    x = b.input([1, 8, 8, 8])
    h = b.op("Relu", [b.batch_norm(b.conv(x, 8, 8, 3, bias=False), 8)])
    h = b.batch_norm(b.conv(h, 8, 8, 3, bias=False), 8)
    y = b.op("Relu", [b.op("Add", [h, x])])
    bottleneck = b.op("Relu", [b.op("Add", [b.batch_norm(b.conv(b.op("Relu", [b.conv(y, 8, 4, 1, pad=0)]), 4, 8, 1, pad=0), 8), y])])
    model = b.model([bottleneck])
    optimized, report = qarep_onnx.optimize(model)
    assert report.refusals == [], [r.message for r in report.refusals]
    assert report.blocks_folded == 0 and report.regions_folded == 3
    assert count(optimized, "BatchNormalization") == 0
    assert_same_function(model, optimized)


def test_a_sum_whose_term_is_non_linear_in_the_input_is_where_blocks_end_not_a_refusal():
    """y = conv(x) + conv(Relu(conv(d))) with d = BN(conv(x)) read twice: the second term is no linear
    function of x, so what d's other reader does is no reason the Add did not fold (tf2onnx's RepViT)."""
    b = GraphBuilder(seed=35)
    x = b.input([1, 8, 8, 8])
    d = b.batch_norm(b.conv(x, 8, 8, 3, groups=8, bias=False), 8)
    second = b.conv(b.op("Relu", [b.conv(d, 8, 16, 1, pad=0)]), 16, 8, 1, pad=0)
    model = b.model([b.op("Add", [b.conv(x, 8, 8, 1, pad=0), second]), b.op("Sigmoid", [d])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.refusals == [], [r.message for r in report.refusals]
    assert report.regions_folded == 1 and count(optimized, "BatchNormalization") == 0
    assert_same_function(model, optimized)


@pytest.mark.parametrize("folded_before", [True, False])
def test_a_stop_says_whether_the_block_before_it_was_folded(folded_before):
    b = GraphBuilder(seed=32)
    x = b.input([1, 8, 8, 8])
    y = b.conv(x, 8, 8, 3)
    if folded_before:
        y = b.batch_norm(y, 8)
    bn = b.batch_norm(y, 8)
    b.nodes[-1].attribute.append(onnx.helper.make_attribute("training_mode", 1))
    model = b.model([bn])
    _, report = qarep_onnx.optimize(model)
    (refusal,) = [r for r in report.refusals if r.code == "BN_TRAINING"]
    assert ("folded without it" in refusal.message) == folded_before
    assert ("stays a node of its own" in refusal.message) == (not folded_before)


def test_a_conv_that_cannot_start_a_region_says_why_when_a_linear_op_follows():
    b = GraphBuilder(seed=33)
    x = b.input([1, 8, 8, 8])
    y = b.batch_norm(b.conv(x, 8, 8, 3, stride=2), 8)
    conv = next(n for n in b.nodes if n.op_type == "Conv")
    kept = [a for a in conv.attribute if a.name != "pads"]
    del conv.attribute[:]
    conv.attribute.extend(kept)
    conv.attribute.append(onnx.helper.make_attribute("auto_pad", "SAME_UPPER"))
    model = b.model([y])
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 0 and [r.code for r in report.refusals] == ["AUTO_PAD"]
    assert "not folded with the linear operators that follow it" in report.refusals[0].message


# -- average pools: what a merge may cost, and channels the pool does not know --------------------------------


def test_a_huge_average_pool_branch_is_not_materialized_as_a_huge_kernel():
    """A depthwise 3x3 plus an AveragePool of 257x257: merging them would write a 257x257 depthwise kernel,
    a thousand times the weights they replace; it is refused (COST) and the model stays as small as it was."""
    b = GraphBuilder(seed=91)
    x = b.input([1, 16, 8, 8])
    pool = b.op("AveragePool", [x], kernel_shape=[257, 257], pads=[128] * 4, count_include_pad=1)
    model = b.model([b.op("Relu", [b.op("Add", [b.conv(x, 16, 16, 3, groups=16), pool])])])
    optimized, report = qarep_onnx.optimize(model)
    assert "COST" in _refusal_codes(report) and count(optimized, "AveragePool") == 1
    assert optimized.ByteSize() <= model.ByteSize() * 2


def test_an_average_pool_of_unknown_channels_merges_in_the_first_run():
    """x [1, c, 8, 8] read by a Pad (that the Conv takes as its padding) and an AveragePool: no Conv reads x,
    so the pool's channels are unknown until the branches are summed; one run must reach the fixed point."""
    b = GraphBuilder(seed=92)
    b.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "c", 8, 8]))
    conv = b.conv(b.op("Pad", ["x", b.ints([0, 0, 1, 1, 0, 0, 1, 1], "pads")]), 4, 4, 3, groups=4, pad=0)
    pool = b.op("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1] * 4, count_include_pad=1)
    model = b.model([b.op("Relu", [b.op("Add", [conv, pool])])])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1
    assert [n.op_type for n in optimized.graph.node] == ["Conv", "Relu"]
    again, second = qarep_onnx.optimize(optimized)
    assert second.regions_folded == 0
    assert_same_function(model, optimized, shapes={"x": (1, 4, 8, 8)})
