"""ConvTranspose leaves: groups, strides, pads, output_padding, dilations; merges only of one geometry."""

import pytest
from helpers.builders import GraphBuilder
from helpers.checks import count
from helpers.linear import codes, folded
from onnx import TensorProto

F = TensorProto.FLOAT


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
    optimized, report = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["ConvTranspose", "Relu"]
    assert report.folds[0].op_types == ("ConvTranspose",)


def test_conv_transposes_merge_only_with_the_same_geometry():
    b = GraphBuilder(seed=10)
    x = b.input([1, 4, 5, 5])
    same = [b.op("ConvTranspose", [x, b.const(b.rng.standard_normal((4, 4, 3, 3)), "w")], strides=[2, 2]) for _ in range(2)]
    merged = b.model([b.op("Add", same)])
    optimized, report = folded(merged)
    assert report.blocks_folded == 1 and count(optimized, "ConvTranspose") == 1
    b = GraphBuilder(seed=11)
    x = b.input([1, 4, 5, 5])
    different = [b.op("ConvTranspose", [x, b.const(b.rng.standard_normal((4, 4, k, k)), "w")], strides=[2, 2], pads=[p] * 4)
                 for k, p in ((3, 1), (5, 2))]
    refused = b.model([b.op("Add", different)])
    optimized, report = folded(refused)
    assert report.blocks_folded == 0 and "MISALIGNED" in codes(report)
