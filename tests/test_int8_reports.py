"""What the INT8 commands write for people and programs: the HTML page (parsed; every figure equal to the
JSON's), strict JSON and no 'nan' for non-finite outputs, bounded text, and quantize's FLOPs at the shapes
the calibration inputs used."""

import json
import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.builders import GraphBuilder
from helpers.int8 import assert_written, sets
from onnx import numpy_helper

from qarep_onnx.cli.int8_render import SHOWN, int8_lines, quantize_lines
from qarep_onnx.int8 import int8_report, quantize
from qarep_onnx.int8.html import int8_html, quantize_html

MODELS = Path(__file__).parent.parent / "fixtures" / "models"
OUTLIER = MODELS / "int8_outlier__torchscript.onnx"


class _Figures(HTMLParser):
    """Every element carrying data-key/data-value, its text, and anything that would load from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.open: list[list] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.links += [v for k, v in attrs if k in ("src", "href")]
        if "data-key" in a:
            self.open.append([tag, a["data-key"], a["data-value"], ""])

    def handle_data(self, data):
        if self.open:
            self.open[-1][3] += data

    def handle_endtag(self, tag):
        if self.open and self.open[-1][0] == tag:
            tag, key, value, text = self.open.pop()
            self.figures.append((key, value, text if tag == "td" else ""))


def _lookup(document, key):
    for part in key.split("."):
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


def _check_page(page: str, document: dict) -> _Figures:
    parsed = _Figures()
    parsed.feed(page)
    assert parsed.figures and "script" not in parsed.tags and not parsed.links and "<link" not in page
    for key, value, text in parsed.figures:
        expected = _lookup(document, key)
        if value == "null":
            assert expected is None, key
            continue
        if value in ("True", "False"):
            assert expected is (value == "True"), key
            continue
        assert float(value) == expected, key  # the exact value, not a rounded one
        if text.strip():  # a table cell shows the value rounded
            digits = len(text.strip().split(".")[1]) if "." in text else 0
            assert float(text) == pytest.approx(expected, abs=0.51 * 10**-digits), key
    return parsed


@pytest.fixture(scope="module")
def reports():
    model = onnx.load(OUTLIER)
    calib, held = sets(model, range(5), "calib"), sets(model, [60, 61], "held")
    int8 = int8_report(model, calib=calib, holdout=held, equalize=True, target_sqnr=45, calib_method="max", provider="cpu")
    q = quantize(model, calib=calib, holdout=held, exclude="auto", equalize=True, target_sqnr=45, calib_method="max",
                 provider="cpu")
    repvgg = int8_report(MODELS / "net_repvgg_a0_small__torchscript.onnx", target_sqnr=40, provider="cpu")
    return int8, q, repvgg


def test_the_html_page_holds_the_figures_of_the_json(reports):
    int8, q, repvgg = reports
    for report, page in ((int8, int8_html(int8, "m.onnx")), (repvgg, int8_html(repvgg, "r.onnx")), (q.report, quantize_html(q.report, "m.onnx"))):
        document = json.loads(json.dumps(report.to_dict(), allow_nan=False))
        parsed = _check_page(page, document)
        keys = {k for k, _, _ in parsed.figures}
        if "model" in document:
            analysis = "folded" if document["folded"] else "model"
            layers = document[analysis]["layers"]
            for k in range(len(layers)):  # per layer weight SQNR per tensor and per channel
                assert f"{analysis}.layers.{k}.sqnr_per_tensor_db" in keys and f"{analysis}.layers.{k}.sqnr_per_channel_db" in keys
            s = document[analysis]["sensitivity"]
            assert all(f"{analysis}.sensitivity.ranking.{k}.sqnr_db" in keys for k in range(len(s["ranking"])))
            for k, point in enumerate(s["curve"]):  # the calibration and held-out curves
                assert f"{analysis}.sensitivity.curve.{k}.holdout_sqnr_db" in keys
            assert page.count("<polyline") == (2 if s["curve"] else 0)
        if document.get("model", {}).get("equalization"):
            pairs = document["model"]["equalization"]["pairs"]
            assert all(f"model.equalization.pairs.{k}.spread_after" in keys for k in range(len(pairs)))
            assert "model.equalization.holdout_after_db" in keys and "model.equalization.holdout_before_db" in keys


def test_cli_writes_the_html_it_was_asked_for_and_it_matches_the_json(tmp_path):
    page, document = tmp_path / "r.html", tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "qarep_onnx", "-q", "int8", "--equalize", "--target-sqnr", "45", "--html",
                           str(page), "--json", str(document), str(OUTLIER)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _check_page(page.read_text(), json.loads(document.read_text()))


def _masked_model():
    """Conv, then an Add of a constant -inf mask (as attention masks are): some outputs are -inf in FP32 and INT8."""
    b = GraphBuilder(seed=9)
    x = b.input([1, 3, 6, 6])
    mask = np.zeros((1, 4, 6, 6), np.float32)
    mask[:, :, :2] = -np.inf
    y = b.op("Add", [b.conv(x, 3, 4, 3), b.const(mask, "mask")])
    z = b.op("Log", [b.op("Relu", [b.conv(x, 3, 4, 3)])])  # log(0) = -inf where the Relu clips
    return b.model([y, z])


def test_non_finite_outputs_give_no_nan_and_strict_json():
    model = _masked_model()
    calib, held = sets(model, range(4), "calib"), sets(model, [7, 8], "held")
    result = quantize(model, calib=calib, holdout=held, fold=False, provider="cpu")
    assert_written(result.model, model)
    masked, logged = result.report.measurement.outputs
    assert masked.nonfinite == 2 * 4 * 2 * 6 and masked.nonfinite_mismatches == 0
    assert math.isfinite(masked.sqnr_db) and math.isfinite(masked.cosine) and 20 < masked.sqnr_db < 80
    assert logged.nonfinite > 0 and not math.isnan(logged.sqnr_db)  # -inf where int8 moved a zero, never nan
    json.dumps(result.report.to_dict(), allow_nan=False)
    report = int8_report(model, calib=calib, holdout=held, provider="cpu")
    json.dumps(report.to_dict(), allow_nan=False)
    text = "\n".join(int8_lines(report, "m") + quantize_lines(result.report)).lower()
    assert "nan" not in text.replace("n/a", "") and "non-finite fp32 value(s) compared by position" in text
    _check_page(int8_html(report, "m"), json.loads(json.dumps(report.to_dict(), allow_nan=False)))


def test_text_lists_stay_bounded_unless_asked(reports):
    _, _, repvgg = reports
    a = repvgg.folded
    assert len(a.layers) > SHOWN
    lines = int8_lines(repvgg, "r")
    weight_rows = [l for l in lines if l.startswith("  /") and ("Conv" in l or "Gemm" in l) and "dB" not in l]
    assert len(weight_rows) <= 2 * SHOWN  # as given and folded tables, at most ten rows each
    assert any("more layers (--all-layers" in l for l in lines)
    full = int8_lines(repvgg, "r", show_all=True)
    assert not any("more layers (--all-layers" in l for l in full) and len(full) > len(lines)


def test_quantize_estimates_flops_at_the_calibration_shapes_when_the_model_has_symbolic_dims():
    b = GraphBuilder(seed=5)
    x = b.input([1, 3, 8, 8])
    y = b.op("Relu", [b.batch_norm(b.conv(x, 3, 4, 3), 4)])
    model = b.model([y])
    for k, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim):  # batch, height, width symbolic (-1 style)
        if k != 1:
            dim.ClearField("dim_value")
            dim.dim_param = f"d{k}"
    model.graph.output[0].type.tensor_type.ClearField("shape")
    feeds = [{"x": np.random.default_rng(k).standard_normal((2, 3, 16, 12)).astype(np.float32)} for k in range(3)]
    from qarep_onnx.runtime.inputs import InputSet

    calib = [InputSet(f, f"set {k}") for k, f in enumerate(feeds)]
    result = quantize(model, calib=calib[:2], holdout=calib[2:], provider="cpu")
    report = result.report
    assert report.flops_shapes == {"x": (1, 3, 16, 12)}  # one sample: the symbolic batch counts as 1
    conv_flops = 2 * 4 * 3 * 9 * 16 * 12
    assert report.fold.stats_after.flops == conv_flops
    assert report.fold.stats_before.flops == conv_flops + 2 * 4 * 16 * 12  # the BatchNorm the fold removed
    assert any("FLOPs estimated at the shapes the calibration inputs used (x 1x3x16x12; per sample)" in n for n in report.notes)
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["flops_shapes"] == {"x": [1, 3, 16, 12]}
    assert_written(result.model, model)


def _with_word_labels() -> onnx.ModelProto:
    """A Conv network with a second output of words (a label table read by ArgMax): no number to measure."""
    b = GraphBuilder(seed=71)
    x = b.input([1, 3, 8, 8])
    y = b.op("Relu", [b.conv(b.op("Relu", [b.conv(x, 3, 8, 3)]), 8, 4, 3)])
    b.initializers.append(numpy_helper.from_array(np.array([b"cat", b"dog", b"eel", b"fox"], dtype=object), "words"))
    index = b.op("ArgMax", [b.op("Flatten", [b.op("GlobalAveragePool", [y])])], axis=1, keepdims=0)
    label = b.op("Gather", ["words", index])
    model = b.model([y, label])
    model.graph.output[1].type.tensor_type.elem_type = onnx.TensorProto.STRING
    return model


def test_an_output_of_words_is_left_out_of_the_figures_and_said_so():
    model = _with_word_labels()
    report = int8_report(model, provider="cpu")
    assert [o.name for o in report.model.quantized.outputs] == [model.graph.output[0].name]
    assert any("holds no numbers" in note and model.graph.output[1].name in note for note in report.notes)
    result = quantize(model, provider="cpu")
    assert [o.name for o in result.report.measurement.outputs] == [model.graph.output[0].name]
    assert any("holds no numbers" in note for note in result.report.notes)
    assert_written(result.model, model)
