"""The weight report: the planted outlier is flagged (per-tensor SQNR collapses, per-channel does not),
figures equal hand computations, axes follow each op's output channel, and folded layers are marked."""

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.builders import GraphBuilder
from onnx import numpy_helper

from qarep_onnx.int8.layers import find_layers
from qarep_onnx.int8.prepare import prepare
from qarep_onnx.int8.weights import SPREAD_LIMIT, weight_report

FIXTURES = Path(__file__).parent.parent / "fixtures"
MANIFEST = {(f["name"], f["exporter"]): f for f in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]}
PLANT = MANIFEST[("int8_outlier", "torchscript")]["extra"]


def _report(name):
    return {w.name: w for w in weight_report(find_layers(prepare(onnx.load(FIXTURES / "models" / f"{name}.onnx"))))}


def test_the_planted_layer_is_flagged_per_tensor_collapses_per_channel_does_not():
    planted, clean = _report("int8_outlier__torchscript"), _report("int8_clean__torchscript")
    layer = PLANT["planted_layer"]
    assert [w.name for w in planted.values() if w.outlier] == [layer]
    assert not any(w.outlier for w in clean.values())
    hit, twin = planted[layer], clean[layer]
    assert hit.spread == pytest.approx(PLANT["factor"], rel=0.1) and hit.spread >= SPREAD_LIMIT
    assert f"output channel {PLANT['planted_channel']}" in hit.reasons[0]
    # per tensor: the x50 channel sets the scale for all the others
    assert hit.sqnr_per_tensor_db < twin.sqnr_per_tensor_db - 10
    assert hit.sqnr_per_tensor_db < hit.sqnr_per_channel_db - 10
    assert hit.worst_channel_per_tensor_db < 15 < twin.worst_channel_per_tensor_db
    # per channel: the planted channel gets its own scale, so nothing is lost
    assert abs(hit.sqnr_per_channel_db - twin.sqnr_per_channel_db) < 1.5
    # the compensated layer's weights (one input channel / 50) stay easy for int8
    assert not planted[PLANT["compensated_layer"]].outlier
    for name, w in planted.items():
        if name != layer:
            assert w.sqnr_per_tensor_db == pytest.approx(clean[name].sqnr_per_tensor_db, abs=1.0)


def test_figures_equal_a_hand_computation_on_the_fixture_weight():
    model = onnx.load(FIXTURES / "models" / "int8_outlier__torchscript.onnx")
    node = next(n for n in model.graph.node if n.name == PLANT["planted_layer"])
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == node.input[1])).astype(np.float64)
    figures = _report("int8_outlier__torchscript")[PLANT["planted_layer"]]
    s = np.abs(w).max() / 127
    per_tensor = np.clip(np.rint(w / s), -127, 127) * s
    channel = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    per_channel = np.stack([np.rint(w[m] / (channel[m] / 127)) * (channel[m] / 127) for m in range(w.shape[0])])
    db = lambda a, b: 10 * math.log10((a**2).sum() / ((a - b) ** 2).sum())  # noqa: E731
    assert figures.sqnr_per_tensor_db == pytest.approx(db(w, per_tensor), abs=1e-9)
    assert figures.sqnr_per_channel_db == pytest.approx(db(w, per_channel), abs=1e-9)
    assert figures.worst_channel_per_tensor_db == pytest.approx(min(db(w[m], per_tensor[m]) for m in range(len(w))), abs=1e-9)
    assert figures.spread == pytest.approx(channel.max() / np.median(channel))
    assert (figures.weight_min, figures.weight_max) == (w.min(), w.max())
    assert figures.shape == w.shape and figures.axis == 0


def _axes_model():
    b = GraphBuilder(seed=3, constants="identity")  # weights behind Identity aliases, as TorchScript shares them
    x = b.input([1, 4, 6, 6])
    y = b.conv(x, 4, 6, 3)
    wt = np.zeros((6, 3, 2, 2))
    wt[:, 2] = 40.0  # ConvTranspose output channel 2 (axis 1) holds the outlier
    wt[:, :2] = b.rng.standard_normal((6, 2, 2, 2))
    t = b.op("ConvTranspose", [y, b.const(wt, "wt")], kernel_shape=[2, 2], strides=[2, 2])
    f = b.op("Flatten", [b.op("GlobalAveragePool", [t])])
    wg = b.rng.standard_normal((3, 5))
    wg[:, 4] *= 30  # Gemm without transB: B is [K, N], output channel 4 is column 4
    g = b.op("Gemm", [f, b.const(wg, "wg")])
    wm = b.rng.standard_normal((5, 2))
    m = b.op("MatMul", [g, b.const(wm, "wm")])
    return b.model([m])


def test_output_channel_axis_of_each_op_and_identity_weights():
    model = _axes_model()
    before = model.SerializeToString()
    prepared = prepare(model)
    assert "Identity" not in [n.op_type for n in prepared.graph.node]  # aliases resolved to the initializers
    layers = {l.op_type: l for l in find_layers(prepared)}
    assert set(layers) == {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    assert (layers["Conv"].axis, layers["ConvTranspose"].axis, layers["Gemm"].axis, layers["MatMul"].axis) == (0, 1, 1, 1)
    figures = {w.op_type: w for w in weight_report(layers.values())}
    assert figures["ConvTranspose"].outlier and "output channel 2" in figures["ConvTranspose"].reasons[0]
    assert figures["Gemm"].outlier and "output channel 4" in figures["Gemm"].reasons[0]
    assert not figures["Conv"].outlier and not figures["MatMul"].outlier
    assert model.SerializeToString() == before  # the input model is left alone


def test_folded_layers_are_marked():
    from qarep_onnx.api import optimize

    result = optimize(onnx.load(FIXTURES / "models" / "net_repvgg_a0_small__torchscript.onnx"))
    names = {f.node for f in result.report.folds}
    figures = weight_report(find_layers(prepare(result.model)), names)
    assert sum(w.from_fold for w in figures) == 12 and len(figures) == 13
    assert [w.name for w in figures if not w.from_fold] == ["/head/fc/Gemm"]
