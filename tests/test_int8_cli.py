"""The int8 and quantize commands: printed figures, strict --json (schema 2), --html, OUT loads in onnxruntime
and passes the checker, exclusion patterns, exit codes, one-line errors, nothing written on failure."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from helpers.int8 import assert_written

from qarep_onnx.runtime.inputs import random_input_sets
from qarep_onnx.runtime.sessions import run

MODELS = Path(__file__).parent.parent / "fixtures" / "models"
OUTLIER = MODELS / "int8_outlier__torchscript.onnx"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "qarep_onnx", *map(str, args)], capture_output=True, text=True)


def _calib(tmp_path, n):
    model = onnx.load(OUTLIER)
    paths = []
    for k in range(n):
        paths += ["--calib", tmp_path / f"c{k}.npy"]
        np.save(paths[-1], random_input_sets(model, 1, 20 + k)[0].feeds["input"])
    return paths


def _strict(text: str) -> dict:
    """Parse JSON refusing NaN/Infinity tokens, and check it re-serializes strictly."""
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    document = json.loads(text, parse_constant=refuse)
    json.dumps(document, allow_nan=False)
    return document


def test_int8_prints_the_report_and_writes_strict_json_to_stdout():
    result = cli("int8", "--target-sqnr", 35, "--json", "-", OUTLIER)
    assert result.returncode == 0, result.stderr
    document = _strict(result.stdout)
    assert document["schema"] == "qarep-onnx.int8" and document["schema_version"] == 2
    assert document["settings"] == {"placement": "tensorrt", "calib_method": "percentile", "percentile": 99.99,
                                    "float_precision": "fp16", "weights": "int8", "equalize": False, "exhaustive": False}
    assert "OUTLIER: output channel 5" in result.stderr and "/body/body.4/Conv" in result.stderr
    assert "selected on the calibration sets (1 layer(s) in float reaches 35 dB" in result.stderr
    assert "confirmed on the held-out sets: keep 1 layer(s) in float" in result.stderr
    assert "random inputs" in result.stderr and "no unfolded blocks" in result.stderr
    s = document["model"]["sensitivity"]
    assert s["selected"] == s["suggested_exclude"] == ["/body/body.6/Conv"] and s["dropped"] == []
    assert [p["count"] for p in s["curve"]] == [0, 1] and all(p["selection_measured"] for p in s["curve"])
    assert s["curve"][1]["holdout_sqnr_db"] == document["model"]["with_suggestion"]["sqnr_db"]
    assert s["curve"][0]["holdout_sqnr_db"] == document["model"]["quantized"]["sqnr_db"]
    assert s["curve"][0]["selection_sqnr_db"] == document["model"]["quantized_selection"]["sqnr_db"]
    assert document["model"]["with_suggestion"]["sqnr_db"] > document["model"]["quantized"]["sqnr_db"]
    assert document["model"]["placement"] == {"layer": 7, "flow": 2}


def test_quantize_writes_a_checked_qdq_model_that_runs_and_says_what_it_measured(tmp_path):
    out, report, page = tmp_path / "q.onnx", tmp_path / "q.json", tmp_path / "q.html"
    before = OUTLIER.read_bytes()
    result = cli("quantize", "--exclude", "auto", "--target-sqnr", 40, "--json", report, "--html", page, "--float-precision",
                 "fp32", *_calib(tmp_path, 5), OUTLIER, out)
    assert result.returncode == 0, result.stderr
    assert OUTLIER.read_bytes() == before
    lines = result.stdout.splitlines()
    assert lines[0].startswith("folded 0 blocks") and lines[-1] == f"wrote {out}"
    assert "kept in float (selected on the calibration sets, confirmed on the held-out sets): /body/body.6/Conv" in result.stdout
    assert "the last 1 of 5 calibration files are held out to measure (c4.npy)" in result.stdout
    assert "random inputs" not in result.stdout and "nan" not in result.stdout.lower()
    document = _strict(report.read_text())
    assert document["schema"] == "qarep-onnx.quantize" and document["layout"]["qdq_pairs"] == 2 * 6 + 2
    assert document["measurement"]["sqnr_db"] > document["all_quantized"]["sqnr_db"]
    written = onnx.load(out)
    assert_written(written, onnx.load(OUTLIER))
    feeds = {"input": np.load(tmp_path / "c4.npy")}
    ours, reference = run(written, feeds)["output"], run(onnx.load(OUTLIER), feeds)["output"]
    measured = 10 * np.log10((reference.astype(np.float64) ** 2).sum() / ((reference - ours).astype(np.float64) ** 2).sum())
    assert abs(measured - document["measurement"]["sqnr_db"]) < 1e-6
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_exclude_takes_names_op_types_and_regular_expressions(tmp_path):
    calib = _calib(tmp_path, 3)
    cases = [
        (["--exclude", "Gemm"], ["/fc/Gemm"]),
        (["--exclude", r"/body/body\.(6|8)/Conv"], ["/body/body.6/Conv", "/body/body.8/Conv"]),
        (["--exclude", "/body/body.0/Conv", "--exclude", "/fc/.*"], ["/body/body.0/Conv", "/fc/Gemm"]),
    ]
    for k, (args, expected) in enumerate(cases):
        out, report = tmp_path / f"q{k}.onnx", tmp_path / f"q{k}.json"
        result = cli("quantize", *args, *calib, "--json", report, OUTLIER, out)
        assert result.returncode == 0, result.stderr
        document = _strict(report.read_text())
        assert document["excluded"] == expected and document["layout"]["float_layers"] == expected
        assert document["exclude_mode"] == "explicit"
        assert_written(onnx.load(out))


def test_quantize_errors_are_one_line_and_write_nothing(tmp_path):
    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    cases = [
        (("quantize", "--exclude", "/body/body.6", OUTLIER, out), 2, "did you mean /body/body.6/Conv"),
        (("quantize", "--exclude", "(", OUTLIER, out), 2, "not a layer name, a layer op type or a valid regular expression"),
        (("quantize", "--exclude", "ConvTranspose", OUTLIER, out), 2, "has no ConvTranspose layer"),
        (("quantize", "--exclude", "/body/body.1/Relu", OUTLIER, out), 2, "a Relu node is not a quantized layer"),
        (("quantize", "--exclude", ".*", OUTLIER, out), 2, "keeps every layer in float"),
        (("quantize", "--exclude", "auto", "--exclude", "/fc/Gemm", OUTLIER, out), 2, "--exclude auto"),
        (("quantize", *_calib(tmp_path, 1), OUTLIER, out), 2, "one calibration file cannot be split"),
        (("quantize", MODELS / "repvgg_block_fp16__torchscript.onnx", out), 2, "FLOAT16"),
        (("quantize", "--html", "-", OUTLIER, out), 2, "--html needs a file path"),
        (("quantize", "--json", report, OUTLIER, report), 3, "the same file"),
        (("quantize", OUTLIER, OUTLIER), 3, "is IN"),
        (("quantize", OUTLIER, tmp_path), 3, "a directory"),
    ]
    before = OUTLIER.read_bytes()
    for args, code, text in cases:
        result = cli(*args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and text in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert not out.exists() and not report.exists()
    assert OUTLIER.read_bytes() == before
    for args in (("--calib-method", "median"), ("--percentile", "120"), ("--float-precision", "fp8"), ("--weights", "int4")):
        result = cli("quantize", *args, OUTLIER, out)  # click's own usage error for an option value
        assert result.returncode == 2 and args[1] in result.stderr and "Traceback" not in result.stderr
        assert not out.exists()
