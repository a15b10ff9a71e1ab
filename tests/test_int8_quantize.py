"""End to end: the planted outlier costs SQNR and --exclude auto wins it back (by keeping the layer that
reads the outlier activation in float), the reported SQNR is what onnxruntime measures, an unfolded
RepVGG network quantizes branch by branch while its folded form quantizes one Conv per block, and
calibration and held-out sets never overlap."""

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.int8 import assert_written

from qarep_onnx.errors import UsageError
from qarep_onnx.int8 import int8_report, quantize
from qarep_onnx.int8.datasets import choose_inputs
from qarep_onnx.runtime.inputs import InputSet, random_input_sets
from qarep_onnx.runtime.sessions import run

FIXTURES = Path(__file__).parent.parent / "fixtures"
MODELS = FIXTURES / "models"
PLANT = next(f for f in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"] if f["name"] == "int8_outlier")["extra"]


def _files(tmp_path, model, seeds, prefix):
    paths = []
    for s in seeds:
        path = tmp_path / f"{prefix}{s}.npz"
        np.savez(path, **random_input_sets(model, 1, 100 + s)[0].feeds)
        paths.append(path)
    return paths


def _sqnr(reference, candidate):
    ref = np.concatenate([r.reshape(-1) for r in reference]).astype(np.float64)
    cand = np.concatenate([c.reshape(-1) for c in candidate]).astype(np.float64)
    return 10 * math.log10((ref**2).sum() / ((ref - cand) ** 2).sum())


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    model = onnx.load(MODELS / "int8_outlier__torchscript.onnx")
    calib, holdout = _files(tmp, model, range(6), "calib"), _files(tmp, model, [50, 51], "held")
    common = dict(calib=calib, holdout=holdout, calib_method="max", float_precision="fp32", provider="cpu")
    auto = quantize(model, exclude="auto", target_sqnr=35, **common)
    everything = quantize(model, **common)
    clean = quantize(MODELS / "int8_clean__torchscript.onnx", **common)
    return model, holdout, auto, everything, clean


def test_the_planted_outlier_costs_sqnr_and_exclude_auto_wins_it_back(planted):
    model, holdout, auto, everything, clean = planted
    assert everything.report.measurement.sqnr_db < clean.report.measurement.sqnr_db - 8
    s = auto.report.sensitivity
    assert s.reached and auto.report.exclude_mode == "auto"
    # the costly layer is the one that reads the x50 activation channel, not the one whose weights were scaled
    assert s.ranking[0].name == PLANT["compensated_layer"]
    assert PLANT["compensated_layer"] in auto.report.excluded and PLANT["planted_layer"] not in auto.report.excluded
    planted_alone = next(r for r in s.ranking if r.name == PLANT["planted_layer"])
    assert planted_alone.sqnr_db > s.target_sqnr_db + 10
    assert auto.report.measurement.sqnr_db >= s.target_sqnr_db > everything.report.measurement.sqnr_db
    assert auto.report.measurement.sqnr_db > everything.report.measurement.sqnr_db + 8
    assert auto.report.all_quantized.sqnr_db == pytest.approx(everything.report.measurement.sqnr_db)
    assert auto.report.layout.float_layers == auto.report.excluded
    for result in (auto, everything, clean):
        assert_written(result.model, model)
    assert s.selected == s.suggested and s.reached and s.reached_selection
    # both figures, side by side: the selection's own sets and the held-out sets
    assert [p.count for p in s.curve] == [0, 1]
    assert s.curve[1].holdout_sqnr_db == pytest.approx(auto.report.measurement.sqnr_db, abs=1e-9)
    assert s.curve[0].holdout_sqnr_db == pytest.approx(everything.report.measurement.sqnr_db, abs=1e-9)
    assert s.curve[1].selection_sqnr_db > s.curve[0].selection_sqnr_db


def test_reported_sqnr_is_what_onnxruntime_measures_on_the_held_out_files(planted):
    model, holdout, auto, everything, _ = planted
    feeds = [dict(np.load(p)) for p in holdout]
    reference = [run(model, f)["output"] for f in feeds]
    for result in (auto, everything):
        written = onnx.load_from_string(result.model.SerializeToString())  # what OUT holds
        measured = _sqnr(reference, [run(written, f)["output"] for f in feeds])
        assert result.report.measurement.sqnr_db == pytest.approx(measured, abs=1e-6)
        cosine = result.report.measurement.outputs[0].cosine
        assert 0.99 < cosine < 1.0
    assert auto.report.inputs.holdout == tuple(f"file {p.name}" for p in holdout)


def test_unfolded_repvgg_quantizes_branch_by_branch_and_folded_one_conv_per_block(tmp_path):
    path = MODELS / "net_repvgg_a0_small__torchscript.onnx"
    model = onnx.load(path)
    calib, holdout = _files(tmp_path, model, range(4), "c"), _files(tmp_path, model, [9], "h")
    unfolded = quantize(model, calib=calib, holdout=holdout, fold=False, placement="narrow", provider="cpu")
    folded = quantize(model, calib=calib, holdout=holdout, placement="narrow", provider="cpu")
    assert unfolded.report.fold is None and folded.report.fold.blocks_folded == 12
    assert (len(unfolded.report.layout.quantized_layers), unfolded.report.layout.qdq_pairs) == (25, 50)
    assert (len(folded.report.layout.quantized_layers), folded.report.layout.qdq_pairs) == (13, 26)
    q = unfolded.model
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    norms = [n for n in q.graph.node if n.op_type == "BatchNormalization"]
    assert len(norms) == 7  # a BatchNorm alone cannot be quantized: the identity branches stay float
    assert all(producer.get(n.input[0]) != "DequantizeLinear" for n in norms)
    assert not any(n.op_type == "BatchNormalization" for n in folded.model.graph.node)
    for result in (unfolded, folded):
        assert 25 < result.report.measurement.sqnr_db < 60
        assert_written(result.model, model)
    # TensorRT's placement adds the skip inputs of the unfolded blocks' sums (the identity BatchNorm's output)
    trt = quantize(model, calib=calib, holdout=holdout, fold=False, provider="cpu").report.layout
    assert trt.residual_pairs > 0 and trt.qdq_pairs == 50 + trt.residual_pairs + trt.flow_pairs
    # the fold merges the identity and 1x1 branches into the 3x3 centre taps: int8 holds those weights less well
    report = int8_report(path, calib=calib, holdout=holdout, sensitivity=False, placement="narrow", provider="cpu")
    given = np.median([w.sqnr_per_channel_db for w in report.model.layers if w.op_type == "Conv"])
    fused = np.median([w.sqnr_per_channel_db for w in report.folded.layers if w.from_fold])
    assert fused < given - 5
    assert report.blocks_unfolded == 12
    assert report.folded.quantized.sqnr_db == pytest.approx(folded.report.measurement.sqnr_db, abs=1e-6)


def test_int8_report_of_a_folded_model_and_its_json(planted):
    model, holdout, auto, _, _ = planted
    report = int8_report(model, samples=2, provider="cpu")
    document = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert document["schema"] == "qarep-onnx.int8" and document["schema_version"] == 2
    assert document["folded"] is None and document["blocks_unfolded"] == 0
    assert [l["name"] for l in document["model"]["layers"] if l["outlier"]] == [PLANT["planted_layer"]]
    assert document["model"]["inputs"]["random"] is True
    assert any("random inputs" in n for n in report.notes)
    s = document["model"]["sensitivity"]
    assert len(s["ranking"]) == 7 and s["ranking"][0]["name"] == PLANT["compensated_layer"]
    assert [r["sqnr_db"] for r in s["ranking"]] == sorted(r["sqnr_db"] for r in s["ranking"])


def test_sensitivity_is_capped_and_reports_what_it_skipped():
    report = int8_report(MODELS / "int8_outlier__torchscript.onnx", samples=2, max_layers=3, provider="cpu")
    s = report.model.sensitivity
    assert len(s.ranking) == 3 and len(s.not_measured) == 4 and s.max_layers == 3
    assert not set(s.suggested) & set(s.not_measured)


def test_an_unreachable_target_selects_the_best_set_seen_and_says_so():
    path = MODELS / "int8_outlier__torchscript.onnx"
    result = quantize(path, samples=2, exclude="auto", target_sqnr=200, max_layers=2, provider="cpu")
    s = result.report.sensitivity
    assert not s.reached and not s.reached_selection and len(s.ranking) == 2 and len(s.not_measured) == 5
    best = max(s.steps, key=lambda m: m.sqnr_db)
    assert set(s.selected) == set(best.excluded)
    assert result.report.excluded == s.suggested and set(s.suggested) <= set(s.selected)
    assert any("do not reach 200 dB" in n for n in result.report.notes)
    with pytest.raises(UsageError, match="every layer in float"):
        quantize(path, samples=2, exclude=".*", provider="cpu")


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_calibration_and_held_out_sets_never_overlap(tmp_path):
    model = onnx.load(MODELS / "int8_outlier__torchscript.onnx")
    files = _files(tmp_path, model, range(10), "f")
    calibration, held, described = choose_inputs(model, files, None)
    assert [s.description for s in held] == ["file f8.npz", "file f9.npz"] and len(calibration) == 8
    assert "f8.npz" in described.note and not described.random
    folder = tmp_path / "held"
    folder.mkdir()
    for p in files[8:]:
        (folder / p.name).write_bytes(p.read_bytes())
    calibration, held, described = choose_inputs(model, files[:8], [folder])
    assert [s.description for s in held] == ["file f8.npz", "file f9.npz"] and len(calibration) == 8
    with pytest.raises(UsageError, match="held-out file .*holds no .npz"):
        choose_inputs(model, files, [_empty(tmp_path)])
    calibration, held, _ = choose_inputs(model, files[:2], None)
    assert len(calibration) == len(held) == 1
    with pytest.raises(UsageError, match="one calibration file cannot be split"):
        choose_inputs(model, files[:1], None)
    with pytest.raises(UsageError, match="held-out sets need calibration sets too"):
        choose_inputs(model, None, files[:1])
    bad = tmp_path / "bad.npz"
    np.savez(bad, wrong=np.zeros(3, np.float32))
    with pytest.raises(UsageError, match=r"^calibration file .*bad.npz"):
        choose_inputs(model, [bad, files[0]], None)
    calibration, held, described = choose_inputs(model, None, None, samples=3, seed=7)
    assert described.random and len(calibration) == 3 and len(held) == 2
    seen = [s.feeds["input"].tobytes() for s in calibration + held]
    assert len(set(seen)) == 5
    assert all(isinstance(s, InputSet) for s in calibration)
