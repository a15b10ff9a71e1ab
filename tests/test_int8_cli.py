"""The int8 and quantize commands: printed figures, --json schema, OUT loads in onnxruntime, exit codes,
one-line errors, nothing written on failure."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

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


def test_int8_prints_the_report_and_writes_json_to_stdout():
    result = cli("int8", "--json", "-", OUTLIER)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["schema"] == "qarep-onnx.int8" and document["schema_version"] == 1
    assert "OUTLIER: output channel 5" in result.stderr and "/body/body.4/Conv" in result.stderr
    assert "keep in float for >= 30 dB (1 layer(s)): /body/body.6/Conv" in result.stderr
    assert "random inputs" in result.stderr and "no unfolded blocks" in result.stderr
    suggested = document["model"]["sensitivity"]["suggested_exclude"]
    assert suggested == ["/body/body.6/Conv"]
    assert document["model"]["with_suggestion"]["sqnr_db"] > document["model"]["quantized"]["sqnr_db"]


def test_quantize_writes_a_qdq_model_that_runs_and_says_what_it_measured(tmp_path):
    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    before = OUTLIER.read_bytes()
    result = cli("quantize", "--exclude", "auto", "--target-sqnr", 40, "--json", report, *_calib(tmp_path, 5), OUTLIER, out)
    assert result.returncode == 0, result.stderr
    assert OUTLIER.read_bytes() == before
    lines = result.stdout.splitlines()
    assert lines[0].startswith("folded 0 blocks") and lines[-1] == f"wrote {out}"
    assert "kept in float (suggested by the sensitivity analysis): /body/body.6/Conv" in result.stdout
    assert "the last 1 of 5 --calib files are held out to measure (c4.npy)" in result.stdout
    assert "random inputs" not in result.stdout
    document = json.loads(report.read_text())
    assert document["schema"] == "qarep-onnx.quantize" and document["layout"]["qdq_pairs"] == 12
    assert document["measurement"]["sqnr_db"] > document["all_quantized"]["sqnr_db"]
    feeds = {"input": np.load(tmp_path / "c4.npy")}
    written = run(onnx.load(out), feeds)["output"]
    reference = run(onnx.load(OUTLIER), feeds)["output"]
    measured = 10 * np.log10((reference.astype(np.float64) ** 2).sum() / ((reference - written).astype(np.float64) ** 2).sum())
    assert abs(measured - document["measurement"]["sqnr_db"]) < 1e-6


def test_quantize_errors_are_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "q.onnx"
    cases = [
        (("quantize", "--exclude", "/body/body.6", OUTLIER, out), 2, "did you mean /body/body.6/Conv"),
        (("quantize", "--exclude", "auto", "--exclude", "/fc/Gemm", OUTLIER, out), 2, "--exclude auto"),
        (("quantize", *_calib(tmp_path, 1), OUTLIER, out), 2, "one --calib file cannot be split"),
        (("quantize", MODELS / "repvgg_block_fp16__torchscript.onnx", out), 2, "FLOAT16"),
        (("quantize", OUTLIER, OUTLIER), 3, "is IN"),
        (("quantize", OUTLIER, tmp_path), 3, "a directory"),
    ]
    before = OUTLIER.read_bytes()
    for args, code, text in cases:
        result = cli(*args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr
        assert not out.exists()
    assert OUTLIER.read_bytes() == before
