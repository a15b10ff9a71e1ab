"""Cross-layer equalization: exact in float (bit for bit, and by the calibrated validation verdict), only across
positively homogeneous ops, right for grouped convolutions and dense layers, effective on the planted outlier
(every layer in int8 within 2 dB of the same network without it), and never kept when it loses on held-out data."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.builders import GraphBuilder
from helpers.int8 import assert_written, sets

from qarep_onnx.int8 import int8_report, quantize
from qarep_onnx.int8.equalize import (
    choose_scales,
    equalize,
    find_pairs,
    input_channel_absmax,
)
from qarep_onnx.int8.layers import find_layers
from qarep_onnx.int8.prepare import prepare
from qarep_onnx.runtime.sessions import run
from qarep_onnx.runtime.validation import validate

MODELS = Path(__file__).parent.parent / "fixtures" / "models"
FIXTURES = Path(__file__).parent.parent / "fixtures"
PLANT = next(f for f in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"] if f["name"] == "int8_outlier")["extra"]


def _chain(between: list[tuple[str, dict]], groups: int = 1, dense: bool = False):
    """Layers joined by the given ops; channel 2 of the first layer's output carries a x40 outlier."""
    b = GraphBuilder(seed=7)
    if dense:
        y = b.input([3, 6])
        for k, (op, attrs) in enumerate(between):
            w = b.rng.standard_normal((6, 6)) * 0.4
            w[:, 2] *= 40 if k == 0 else 1
            y = b.op("Gemm", [y, b.const(w, "w"), b.const(b.rng.standard_normal(6), "b")])
            y = b.op(op, [y] + attrs.pop("inputs", []), **attrs) if op else y
        y = b.op("Gemm", [y, b.const(b.rng.standard_normal((6, 4)), "w"), b.const(np.zeros(4), "b")])
        return b.model([y])
    y = b.input([1, 8, 6, 6])
    for k, (op, attrs) in enumerate(between):
        w = b.rng.standard_normal((8, 8 // groups, 3, 3)) * 0.3
        w[2] *= 40 if k == 0 else 1
        y = b.op("Conv", [y, b.const(w, "w"), b.const(b.rng.standard_normal(8) * 0.1, "b")], kernel_shape=[3, 3],
                 pads=[1, 1, 1, 1], group=groups)
        y = b.op(op, [y] + attrs.pop("inputs", []), **attrs) if op else y
    y = b.conv(y, 8, 4, 3, groups=1)
    return b.model([y])


def _equalized(model):
    prepared = prepare(model)
    layers = find_layers(prepared)
    pairs = find_pairs(prepared, layers)
    feeds = [s.feeds for s in sets(model, range(3), "c")]
    absmax = {}
    probe = onnx.ModelProto()
    probe.CopyFrom(prepared)
    for p in pairs:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(p.tensor, onnx.TensorProto.FLOAT, None))
    for f in feeds:
        out = run(probe, f)
        for p in pairs:
            axis = p.channel_axis
            seen = np.moveaxis(np.abs(out[p.tensor]), axis, 0).reshape(out[p.tensor].shape[axis], -1).max(axis=1)
            absmax[p.tensor] = np.maximum(absmax.get(p.tensor, 0), seen)
    equalized, scales = equalize(prepared, pairs, absmax)
    return prepared, pairs, equalized, scales


@pytest.mark.parametrize("between, groups, dense", [
    ([("Relu", {}), ("Relu", {})], 1, False),
    ([("LeakyRelu", {"alpha": 0.1}), ("", {})], 1, False),
    ([("Relu", {}), ("Relu", {})], 4, False),
    ([("PRelu", {"inputs": []})], 1, False),
    ([("Relu", {}), ("LeakyRelu", {"alpha": 0.2})], 1, True),
])
def test_equalization_is_exact_in_float_and_balances_the_outlier_channel(between, groups, dense):
    if between[0][0] == "PRelu":
        b = GraphBuilder(seed=1)
        between = [("PRelu", {"inputs": [b.const(np.linspace(0.05, 0.3, 8).reshape(8, 1, 1), "slope")]})]
        model = _chain(between)
        model.graph.initializer.extend(b.initializers)
    else:
        model = _chain(between, groups, dense)
    prepared, pairs, equalized, scales = _equalized(model)
    assert len(pairs) == len(between)
    assert_written(equalized, model)
    for s in scales:  # powers of two
        assert np.all(np.exp2(np.round(np.log2(s))) == s)
    assert int(np.argmax(scales[0])) == 2 and scales[0][2] >= 4 * np.median(scales[0])  # the outlier channel, most
    for feeds in (s.feeds for s in sets(model, [11, 12], "h")):
        a, b = run(prepared, feeds), run(equalized, feeds)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])  # powers of two: the same floats
    assert validate(prepared, equalized, samples=2, provider="cpu").passed


def test_no_pair_across_ops_that_are_not_positively_homogeneous():
    b = GraphBuilder(seed=2)
    x = b.input([1, 4, 6, 6])
    silu_in = b.conv(x, 4, 4, 3)
    silu = b.op("Mul", [silu_in, b.op("Sigmoid", [silu_in])])
    relu6 = b.op("Clip", [b.conv(silu, 4, 4, 3), b.const(np.array(0.0), "lo"), b.const(np.array(6.0), "hi")])
    shifted = b.op("Clip", [b.conv(relu6, 4, 4, 3), b.const(np.array(-1.0), "lo2")])
    relu = b.op("Clip", [b.conv(shifted, 4, 4, 3), b.const(np.array(0.0), "lo3")])  # max(x, 0): homogeneous
    y = b.conv(relu, 4, 4, 3)
    fanout = b.op("Relu", [b.conv(y, 4, 4, 3)])
    out = b.op("Add", [b.conv(fanout, 4, 4, 3), fanout])  # the activation has two readers: no pair
    model = b.model([out])
    prepared = prepare(model)
    pairs = find_pairs(prepared, find_layers(prepared))
    assert [(p.between) for p in pairs] == ["Clip", ""]
    names = [n.name for n in prepared.graph.node if n.op_type == "Conv"]
    assert [(p.first.name, p.second.name) for p in pairs] == [(names[3], names[4]), (names[4], names[5])]


def test_scales_balance_activation_range_against_the_next_weights():
    a = np.array([1.0, 1.0, 64.0, 0.0, 4.0])
    w = np.array([1.0, 4.0, 1.0, 1.0, 0.0])
    s = choose_scales(a, w)
    assert s.tolist() == [1.0, 0.5, 8.0, 1.0, 1.0]  # sqrt(a/w), a power of two, 1 where either is zero


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    outlier = onnx.load(MODELS / "int8_outlier__torchscript.onnx")
    calib, held = sets(outlier, range(100, 106), "calib"), sets(outlier, [150, 151], "held")
    common = dict(calib=calib, holdout=held, calib_method="max", provider="cpu")
    return {
        "outlier": quantize(outlier, **common),
        "equalized": quantize(outlier, equalize=True, **common),
        "clean": quantize(MODELS / "int8_clean__torchscript.onnx", **common),
        "clean_equalized": quantize(MODELS / "int8_clean__torchscript.onnx", equalize=True, **common),
        "model": outlier,
        "sets": (calib, held),
    }


def test_equalization_removes_the_planted_outlier_with_every_layer_in_int8(planted):
    outlier, equalized, clean = planted["outlier"], planted["equalized"], planted["clean"]
    e = equalized.report.equalization
    assert e.kept and e.validation == "passed" and not equalized.report.excluded
    assert outlier.report.measurement.sqnr_db < clean.report.measurement.sqnr_db - 8
    assert equalized.report.measurement.sqnr_db >= clean.report.measurement.sqnr_db - 2  # no float layer at all
    assert e.holdout_after_db == pytest.approx(equalized.report.measurement.sqnr_db, abs=1e-9)
    assert e.holdout_before_db == pytest.approx(outlier.report.measurement.sqnr_db, abs=1e-9)
    hit = next(p for p in e.pairs if p.first == PLANT["planted_layer"])
    assert hit.second == PLANT["compensated_layer"] and hit.between == "Relu"
    assert hit.spread_before > 25 and hit.spread_after < 3 and hit.activation_sqnr_after_db > hit.activation_sqnr_before_db + 4
    assert_written(equalized.model, planted["model"])
    # the written model computes the equalized network: its float weights are scaled, the function is the same
    assert e.selection_after_db > e.selection_before_db


def test_equalization_that_loses_on_held_out_data_is_not_kept(planted):
    e = planted["clean_equalized"].report.equalization
    assert e.pairs and e.validation == "passed"
    gained = e.selection_after_db > e.selection_before_db and e.holdout_after_db >= e.holdout_before_db
    assert e.kept == gained
    if not e.kept:  # the model written is the one before equalization
        assert planted["clean_equalized"].report.measurement.sqnr_db == pytest.approx(e.holdout_before_db, abs=1e-9)
        assert planted["clean_equalized"].report.measurement.sqnr_db == pytest.approx(
            planted["clean"].report.measurement.sqnr_db, abs=1e-9)
    assert "held-out" in e.reason or "calibration" in e.reason


def test_int8_report_shows_equalization_both_figures_and_spreads(planted):
    calib, held = planted["sets"]
    report = int8_report(planted["model"], calib=calib, holdout=held, equalize=True, calib_method="max", target_sqnr=35,
                         provider="cpu")
    document = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    e = document["model"]["equalization"]
    assert e["kept"] and len(e["pairs"]) == 5 and e["holdout_after_db"] > e["holdout_before_db"] + 8
    assert document["settings"]["equalize"] is True
    # with the outlier gone, every layer in int8 reaches 35 dB: nothing is kept in float
    assert document["model"]["sensitivity"]["selected"] == [] and document["model"]["sensitivity"]["reached"]


def test_input_channel_ranges_of_a_grouped_convolution():
    b = GraphBuilder(seed=3)
    x = b.input([1, 4, 5, 5])
    y = b.conv(x, 4, 6, 3, groups=2)  # weight [6, 2, 3, 3]: input channels 0,1 -> outputs 0..2; 2,3 -> 3..5
    layer = find_layers(prepare(b.model([y])))[0]
    w = np.abs(layer.weight)
    expected = [w[:3, 0].max(), w[:3, 1].max(), w[3:, 0].max(), w[3:, 1].max()]
    np.testing.assert_allclose(input_channel_absmax(layer), expected)
