"""The conv-form algebra on its own: geometry rules and numbers checked against onnxruntime."""

import numpy as np
import pytest
from helpers.builders import GraphBuilder

from qarep_onnx.errors import Refused
from qarep_onnx.fold import algebra
from qarep_onnx.fold.algebra import diagonal_geometry
from qarep_onnx.fold.kinds import merge_geometry
from qarep_onnx.fold.kinds.conv import conv_geometry
from qarep_onnx.runtime.sessions import run


def geometry(k, cin=8, cout=8, groups=1, stride=1, dilation=1, pads=None):
    kernel = (k, k) if isinstance(k, int) else tuple(k)
    if pads is None:
        pads = tuple(dilation * (kk - 1) // 2 for kk in kernel) * 2
    return conv_geometry((cout, cin // groups, *kernel), groups, (stride,) * 2, (dilation,) * 2, tuple(pads))


def _conv_values(weight, bias, groups, dilation, pads):
    weight = np.asarray(weight)
    return algebra.leaf_values(weight, bias, conv_geometry(weight.shape, groups, (1, 1), dilation, pads))


def test_3x3_and_1x1_merge_into_centred_3x3():
    merged = merge_geometry([geometry(3), geometry(1), diagonal_geometry(8)])
    assert merged.kernel == (3, 3) and merged.pads == (1, 1, 1, 1) and merged.groups == 1


def test_groups_merge_to_their_gcd_and_identity_keeps_depthwise():
    assert merge_geometry([geometry(3, groups=4), geometry(1, groups=2)]).groups == 2
    assert merge_geometry([geometry(3, groups=8), diagonal_geometry(8)]).groups == 8


def test_dilated_3x3_keeps_its_dilation_with_a_1x1():
    merged = merge_geometry([geometry(3, dilation=2), geometry(1)])
    assert merged.kernel == (3, 3) and merged.dilation == (2, 2) and merged.pads == (2, 2, 2, 2)


def test_dilations_1_and_2_give_a_dense_5x5():
    merged = merge_geometry([geometry(3, dilation=2), geometry(3)])
    assert merged.kernel == (5, 5) and merged.dilation == (1, 1)


def test_acnet_branches_merge_into_3x3():
    merged = merge_geometry([geometry(3), geometry((3, 1), pads=(1, 0, 1, 0)), geometry((1, 3), pads=(0, 1, 0, 1))])
    assert merged.kernel == (3, 3) and merged.pads == (1, 1, 1, 1)


@pytest.mark.parametrize(
    "branches, code",
    [
        ([geometry(3, stride=2), geometry(1)], "STRIDE_MISMATCH"),
        ([geometry(3, stride=2), diagonal_geometry(8)], "STRIDE_MISMATCH"),
        ([geometry(3), geometry(3, pads=(2, 2, 0, 0))], "MISALIGNED"),
        ([geometry(3), geometry(1, pads=(1, 1, 1, 1))], "MISALIGNED"),
        ([geometry(2, pads=(0, 0, 1, 1)), geometry(1)], "EVEN_KERNEL"),
        ([geometry(3, cout=16), geometry(1)], "CHANNEL_MISMATCH"),
    ],
)
def test_merge_refusals(branches, code):
    with pytest.raises(Refused) as refused:
        merge_geometry(branches)
    assert refused.value.reason.code == code


def test_batch_norm_identity():
    rng = np.random.default_rng(0)
    form = _conv_values(rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4), 1, (1, 1), (1,) * 4)
    gamma, beta, mean, var = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4), rng.standard_normal(4), rng.uniform(0.5, 1.5, 4)
    out = algebra.batch_norm(form, gamma, beta, mean, var, 1e-3)
    t = gamma / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(out.weight, form.weight * t[:, None, None, None])
    np.testing.assert_allclose(out.bias, t * (form.bias - mean) + beta)


def _conv_model(b: GraphBuilder, x, forms):
    """A graph computing the sum of the given forms with real Conv nodes, and the merged Conv."""
    outs = []
    for f in forms:
        g = f.geometry
        w = b.const(f.weight.astype(np.float32), "w")
        bias = b.const(f.bias.astype(np.float32), "b")
        outs.append(
            b.op("Conv", [x, w, bias], kernel_shape=list(g.kernel), strides=list(g.stride),
                 dilations=list(g.dilation), pads=list(g.pads), group=g.groups)
        )
    return outs


@pytest.mark.parametrize(
    "shapes",
    [
        [(3, 1, 1, (1,) * 4), (1, 2, 1, (0,) * 4)],  # (k, groups, dilation, pads)
        [(3, 4, 2, (2,) * 4), (1, 8, 1, (0,) * 4)],
        [(5, 2, 1, (2,) * 4), (3, 4, 1, (1,) * 4), (1, 1, 1, (0,) * 4)],
    ],
)
def test_merged_form_computes_the_sum_on_onnxruntime(shapes):
    rng = np.random.default_rng(1)
    forms = [
        _conv_values(rng.standard_normal((8, 8 // g, k, k)), rng.standard_normal(8), g, (d, d), pads)
        for k, g, d, pads in shapes
    ]
    merged = algebra.add(forms, merge_geometry([f.geometry for f in forms]))
    b = GraphBuilder()
    x = b.input([1, 8, 9, 9])
    branch_outputs = _conv_model(b, x, forms)
    total = branch_outputs[0]
    for o in branch_outputs[1:]:
        total = b.op("Add", [total, o])
    fused = _conv_model(b, x, [merged])[0]
    model = b.model([total, fused])
    feeds = {"x": rng.standard_normal((1, 8, 9, 9)).astype(np.float32)}
    out = run(model, feeds)
    np.testing.assert_allclose(out[fused], out[total], atol=1e-4)


def test_identity_embeds_as_centre_tap_on_each_channel():
    target = geometry(3, cin=4, cout=4, groups=2)
    w = algebra.embed(algebra.identity_values(4), target)
    assert w.shape == (4, 2, 3, 3)
    expected = np.zeros((4, 2, 3, 3))
    for c in range(4):
        expected[c, c % 2, 1, 1] = 1.0
    np.testing.assert_array_equal(w, expected)


def test_regroup_finds_the_block_diagonal_structure_of_a_dense_weight():
    rng = np.random.default_rng(2)
    grouped = rng.standard_normal((8, 2, 3, 3))  # groups=4
    dense = algebra.embed(_conv_values(grouped, None, 4, (1, 1), (1,) * 4), geometry(3))
    form = algebra.FormValues(dense, np.zeros(8), geometry(3))
    regrouped = algebra.regroup(form)
    assert regrouped.geometry.groups == 4
    np.testing.assert_array_equal(regrouped.weight, grouped)


def test_regroup_keeps_a_truly_dense_weight():
    form = _conv_values(np.ones((8, 8, 3, 3)), None, 1, (1, 1), (1,) * 4)
    assert algebra.regroup(form).geometry.groups == 1
