"""A zero Pad in front of a Conv becomes its padding (tf2onnx's ZeroPadding2D); other Pads are refused."""

import numpy as np
import onnx
import pytest
from helpers.builders import GraphBuilder
from helpers.checks import count
from helpers.linear import codes, folded
from onnx import TensorProto

F = TensorProto.FLOAT


# -- zero Pads ----------------------------------------------------------------------------------------------------


def _pad(b, x, pads, value=None, mode=None, axes=None, opset_style="inputs"):
    if opset_style == "attribute":
        attrs = {"pads": list(pads)} | ({"value": value} if value is not None else {}) | ({"mode": mode} if mode else {})
        return b.op("Pad", [x], **attrs)
    inputs = [x, b.const(np.array(pads, np.int64), "pads")]
    b.initializers[-1].CopyFrom(onnx.numpy_helper.from_array(np.array(pads, np.int64), b.initializers[-1].name))
    if value is not None or axes is not None:
        inputs.append(b.const(np.array(value or 0.0), "value"))
    if axes is not None:
        inputs.append(b.const(np.array(axes, np.int64), "axes"))
        b.initializers[-1].CopyFrom(onnx.numpy_helper.from_array(np.array(axes, np.int64), b.initializers[-1].name))
    return b.op("Pad", inputs, **({"mode": mode} if mode else {}))


@pytest.mark.parametrize("style", ["inputs", "axes", "attribute"])
def test_a_tf2onnx_repvit_block_with_an_explicit_zero_pad_folds_to_one_conv(style):
    """Pad(x, 1) -> dw3x3 (pads 0) -> BN, + dw1x1 -> BN, + x, then BN: one depthwise 3x3, no Pad, no BatchNorm."""
    b = GraphBuilder(seed=17)
    x = b.input([1, 16, 8, 8])
    if style == "axes":
        padded = _pad(b, x, [1, 1, 1, 1], axes=[2, 3])
    elif style == "attribute":
        padded = _pad(b, x, [0, 0, 1, 1, 0, 0, 1, 1], opset_style="attribute")
    else:
        padded = _pad(b, x, [0, 0, 1, 1, 0, 0, 1, 1])
    y3 = b.batch_norm(b.conv(padded, 16, 16, 3, pad=0, groups=16, bias=False), 16)
    y1 = b.batch_norm(b.conv(x, 16, 16, 1, pad=0, groups=16, bias=False), 16)
    s = b.batch_norm(b.op("Add", [b.op("Add", [y3, y1]), x]), 16)
    model = b.model([b.op("Relu", [s])], opset=18 if style == "axes" else (10 if style == "attribute" else 17))
    optimized, report = folded(model)
    assert [n.op_type for n in optimized.graph.node] == ["Conv", "Relu"] and report.blocks_folded == 1
    conv = optimized.graph.node[0]
    assert {a.name: list(a.ints) for a in conv.attribute}["pads"] == [1, 1, 1, 1]
    assert "Pad" in report.folds[0].removed_op_types


@pytest.mark.parametrize("case, pads, value, mode", [
    ("non-zero value", [0, 0, 1, 1, 0, 0, 1, 1], 0.5, None),
    ("reflect", [0, 0, 1, 1, 0, 0, 1, 1], None, "reflect"),
    ("channel axis", [0, 1, 1, 1, 0, 0, 1, 1], None, None),
    ("negative", [0, 0, -1, 0, 0, 0, 0, 0], None, None),
])
def test_pads_a_conv_cannot_take_over_are_refused(case, pads, value, mode):
    b = GraphBuilder(seed=18)
    x = b.input([1, 8, 8, 8])
    padded = _pad(b, x, pads, value=value, mode=mode)
    channels = 9 if case == "channel axis" else 8
    y3 = b.conv(padded, channels, 8, 3, pad=0)
    y1 = b.conv(x, 8, 8, 1, pad=0)
    if case in ("channel axis", "negative"):
        model = b.model([y3, y1])
    else:
        model = b.model([b.op("Add", [y3, y1])])
    optimized, report = folded(model)
    assert count(optimized, "Pad") == 1 and report.blocks_folded == 0
    if case not in ("channel axis", "negative"):
        assert "BLOCKING_OP" in codes(report)
        assert any(("0.5" in r.message) or ("reflect" in r.message) for r in report.refusals)
