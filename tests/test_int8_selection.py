"""Honest selection: layers are ranked and selected on calibration sets and confirmed on held-out sets, an
exclusion whose gain does not hold on held-out data is dropped (both figures in the JSON), the fast search
decides as the exhaustive one does on the small fixtures, and the one-session measurements are those of the
written Q/DQ model."""

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.int8 import assert_written, sets

from qarep_onnx.int8 import quantize
from qarep_onnx.int8.analysis import analyse_model
from qarep_onnx.int8.calibrate import run_model
from qarep_onnx.int8.measure import compare_outputs
from qarep_onnx.int8.precision import emulate_fp16
from qarep_onnx.int8.qdq import build_qdq
from qarep_onnx.int8.report import Settings
from qarep_onnx.runtime.providers import select_provider

MODELS = Path(__file__).parent.parent / "fixtures" / "models"
OUTLIER = MODELS / "int8_outlier__torchscript.onnx"


def test_an_exclusion_whose_gain_does_not_hold_on_held_out_data_is_dropped():
    model = onnx.load(OUTLIER)
    # held-out inputs 20x larger than the calibration ones: clipping everywhere swamps what one float layer gains
    calib, held = sets(model, range(4), "calib"), sets(model, [50, 51], "held", scale=20.0)
    result = quantize(model, calib=calib, holdout=held, exclude="auto", target_sqnr=40, calib_method="max", provider="cpu")
    s = result.report.sensitivity
    assert s.selected == ("/body/body.6/Conv",) and s.reached_selection  # chosen on the calibration sets ...
    assert s.suggested == () and s.dropped == ("/body/body.6/Conv",) and not s.reached  # ... not confirmed
    gain_selection = s.curve[1].selection_sqnr_db - s.curve[0].selection_sqnr_db
    gain_holdout = s.curve[1].holdout_sqnr_db - s.curve[0].holdout_sqnr_db
    assert gain_selection > 10 and abs(gain_holdout) < 0.1
    assert result.report.excluded == () and result.report.exclude_mode == "auto"
    assert result.report.measurement.sqnr_db == pytest.approx(s.curve[0].holdout_sqnr_db, abs=1e-9)
    assert any("gained nothing on the held-out sets" in n for n in result.report.notes)
    document = json.loads(json.dumps(result.report.to_dict(), allow_nan=False))["sensitivity"]
    assert document["selected"] == ["/body/body.6/Conv"] and document["suggested_exclude"] == []
    assert document["dropped"] == ["/body/body.6/Conv"] and document["reached_selection"] and not document["reached"]
    assert [p["holdout_sqnr_db"] for p in document["curve"]] == [p.holdout_sqnr_db for p in s.curve]
    assert_written(result.model, model)


@pytest.mark.parametrize("name, target", [("int8_outlier", 40), ("net_repvgg_a0_small", 36), ("qarep_detector", 32),
                                          ("net_fastvit_small", 26)])
def test_the_fast_search_decides_as_the_exhaustive_one(name, target):
    path = MODELS / f"{name}__torchscript.onnx"
    fast, slow = (quantize(path, exclude="auto", target_sqnr=target, exhaustive=flag, provider="cpu") for flag in (False, True))
    assert fast.report.excluded == slow.report.excluded and fast.report.excluded
    assert fast.report.sensitivity.selected == slow.report.sensitivity.selected
    assert fast.report.measurement.sqnr_db == slow.report.measurement.sqnr_db
    assert slow.report.sensitivity.exhaustive and not fast.report.sensitivity.exhaustive


def test_ranking_is_measured_on_the_first_calibration_set_and_equals_the_written_model():
    model = onnx.load(OUTLIER)
    calib, held = sets(model, range(5), "calib"), sets(model, [40, 41], "held")
    settings = Settings(calib_method="max", float_precision="fp32")
    choice = select_provider("cpu")
    analysis, pipeline = analyse_model("as given", model, calib, held, choice, settings, sensitivity=True, target_sqnr=35)
    s = analysis.sensitivity
    assert s.ranking_sets == ("calib 0",)
    names = [l.name for l in pipeline.layers]
    reference = run_model(pipeline.prepared, calib[:1], choice, "float")
    for r in s.ranking[:3]:  # each layer alone, written out and run: the same SQNR the ranking measured
        written = build_qdq(pipeline.prepared, pipeline.layers, pipeline.placement, pipeline.limits, [r.name])
        got = compare_outputs(["output"], reference, run_model(written, calib[:1], choice, "int8"))[0].sqnr_db
        assert got == r.sqnr_db
    # any candidate: the switch session and the written model compute the same numbers, bit for bit
    for chosen in (names, names[::2], names[1:2], []):
        written = build_qdq(pipeline.prepared, pipeline.layers, pipeline.placement, pipeline.limits, chosen)
        ours = pipeline.candidates.engine.run(frozenset(chosen), held)
        for a, b in zip(ours, run_model(written, held, choice, "int8")):
            np.testing.assert_array_equal(a["output"], b["output"])


def test_fp16_measurement_is_the_written_model_with_its_float_layers_rounded_to_float16():
    model = onnx.load(MODELS / "net_repvgg_a0_small__torchscript.onnx")
    calib, held = sets(model, range(3), "calib"), sets(model, [30], "held")
    settings = Settings(calib_method="max", float_precision="fp16")
    choice = select_provider("cpu")
    from qarep_onnx.api import optimize

    folded = optimize(model).model
    _, pipeline = analyse_model("folded", folded, calib, held, choice, settings)
    names = [l.name for l in pipeline.layers]
    kept = set(names[-3:])
    written = build_qdq(pipeline.prepared, pipeline.layers, pipeline.placement, pipeline.limits, [n for n in names if n not in kept])
    assert not any(n.op_type == "Cast" for n in written.graph.node)  # the casts are for the measurement only
    emulated = emulate_fp16(written, [l for l in pipeline.layers if l.name in kept])
    a = pipeline.candidates.engine.run(frozenset(names) - kept, held)[0]
    b = run_model(emulated, held, choice, "emulated")[0]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # fp16 storage of the float layers costs something, far less than int8 does
    fp32 = compare_outputs(list(a), pipeline.candidates.runs.references,
                           run_model(written, held, choice, "written"))[0].sqnr_db
    fp16 = compare_outputs(list(a), pipeline.candidates.runs.references, [b])[0].sqnr_db
    assert math.isfinite(fp16) and fp16 < fp32 + 0.5


def test_quantize_ranks_only_when_it_must_choose_and_the_report_always_ranks():
    model = onnx.load(OUTLIER)
    calib, held = sets(model, range(4), "calib"), sets(model, [40, 41], "held")
    result = quantize(model, calib=calib, holdout=held, exclude="auto", target_sqnr=20, provider="cpu")
    s = result.report.sensitivity
    assert s.ranking == () and len(s.not_measured) == 7 and s.selected == () and result.report.excluded == ()
    assert s.measurements == 2  # every layer in int8, on the selection and the held-out sets
    from qarep_onnx.int8 import int8_report

    report = int8_report(model, calib=calib, holdout=held, target_sqnr=20, provider="cpu")
    assert len(report.model.sensitivity.ranking) == 7 and report.model.sensitivity.selected == ()
