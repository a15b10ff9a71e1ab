"""End to end through the command line: summary, exit codes, one-line errors, no partial output."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.builders import BlockSpec, GraphBuilder, qarep_model
from helpers.checks import assert_same_function, cli, count

import qarep_onnx


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "in.onnx"
    onnx.save(qarep_model(BlockSpec(alpha="scalar", bn_3x3="separate")), path)
    return path


def test_optimize_writes_a_folded_model_and_prints_a_summary(model_path, tmp_path):
    out = tmp_path / "out.onnx"
    before = model_path.read_bytes()
    result = cli("optimize", model_path, out)
    assert result.returncode == 0, result.stderr
    assert "folded 1 blocks" in result.stdout
    assert [line.split() for line in result.stdout.splitlines() if line.strip().startswith("Conv")] == [["Conv", "2", "1"]]
    assert model_path.read_bytes() == before
    original, optimized = onnx.load(model_path), onnx.load(out)
    assert count(optimized, "Conv") == 1
    assert_same_function(original, optimized)
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # not the private mode of a temp file


def test_keep_post_bn_flag(model_path, tmp_path):
    out = tmp_path / "out.onnx"
    assert cli("optimize", "--keep-post-bn", model_path, out).returncode == 0
    assert count(onnx.load(out), "BatchNormalization") == 1
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_version_and_help():
    version = cli("--version")
    assert version.returncode == 0 and qarep_onnx.__version__ in version.stdout
    helped = cli("optimize", "--help")
    assert helped.returncode == 0 and "--keep-post-bn" in helped.stdout


def _external_model(tmp_path, location):
    """A model whose weights point at an external data file ``location`` (which is not written)."""
    model = qarep_model(BlockSpec(channels_in=32, channels_out=32))
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "36864")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / f"external_{abs(hash(location))}.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _bad_inputs(tmp_path, model_path):
    """Every bad input of the CLI: (IN, OUT, documented exit code)."""
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model_path.read_bytes()[:200])
    not_a_model = tmp_path / "tensor.onnx"
    not_a_model.write_bytes(onnx.numpy_helper.from_array(np.ones((4, 4), np.float32), "t").SerializeToString())
    too_new = tmp_path / "too_new.onnx"
    future = onnx.load(model_path)
    future.ir_version = onnx.IR_VERSION + 1
    too_new.write_bytes(future.SerializeToString())
    out = tmp_path / "o.onnx"
    return {
        "missing": (tmp_path / "nope.onnx", out, 2),
        "directory": (tmp_path, out, 2),
        "empty": (empty, out, 2),
        "random bytes": (noise, out, 2),
        "truncated": (truncated, out, 2),
        "protobuf that is not a model": (not_a_model, out, 2),
        "IR version too new": (too_new, out, 2),
        "missing external data": (_external_model(tmp_path, "weights.bin"), out, 2),
        "external data outside the folder": (_external_model(tmp_path, "../outside.bin"), out, 2),
        "output folder missing": (model_path, tmp_path / "no" / "o.onnx", 3),
        "output folder not writable": (model_path, Path("/sys/qarep-onnx-test.onnx"), 3),
        "output is a directory": (model_path, tmp_path, 3),
        "output is the input": (model_path, model_path, 3),
    }


def _can_write_in(folder):
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


BAD_INPUTS = [
    "missing", "directory", "empty", "random bytes", "truncated", "protobuf that is not a model", "IR version too new",
    "missing external data", "external data outside the folder", "output folder missing", "output folder not writable",
    "output is a directory", "output is the input",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_line_and_an_exit_code(case, tmp_path, model_path):
    source, out, code = _bad_inputs(tmp_path, model_path)[case]
    if case == "output folder not writable" and _can_write_in(out.parent):
        pytest.skip(f"{out.parent} is writable here")
    before = set(tmp_path.rglob("*"))
    result = cli("optimize", source, out)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qarep-onnx: error:") and "Traceback" not in result.stderr
    assert set(tmp_path.rglob("*")) == before  # no output, no temporary file left behind
    assert not out.is_file() or out == source


def test_same_file_with_force_overwrites(model_path):
    result = cli("optimize", "--force", model_path, model_path)
    assert result.returncode == 0, result.stderr
    assert count(onnx.load(model_path), "Conv") == 1


@pytest.mark.parametrize("args, words", [
    (("optimize", "only-one-arg.onnx"), ["Missing argument", "OUT"]),
    (("optimize", "--provider", "foo", "a.onnx", "b.onnx"), ["Invalid value", "--provider"]),
    (("int8", "--calib-method", "median", "a.onnx"), ["Invalid value", "--calib-method"]),
    (("optimize", "--nope", "a.onnx", "b.onnx"), ["No such option", "--nope"]),
    (("frobnicate",), ["No such command", "frobnicate"]),
])
def test_a_usage_error_is_one_line_that_names_the_help(tmp_path, args, words):
    """click's own words (they vary between click versions), on one line, with where to look."""
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.count("\n") == 1 and "--help" in result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert not list(tmp_path.iterdir())


# -- validation, reports, inspect, bench ----------------------------------------------------


def test_validate_prints_the_provider_and_each_output(model_path, tmp_path):
    result = cli("optimize", "--validate", "--provider", "auto", model_path, tmp_path / "out.onnx")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("provider: ") == 1 and "validation passed" in result.stdout
    assert "[E:onnxruntime" not in result.stderr and "EP Error" not in result.stderr + result.stdout


def test_failing_validation_exits_non_zero_and_writes_nothing(model_path, tmp_path):
    out = tmp_path / "out.onnx"
    result = cli("optimize", "--validate", "--provider", "cpu", "--atol", "0", "--rtol", "0", model_path, out)
    assert result.returncode == 4
    assert "validation failed" in result.stderr and "differs by" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_unavailable_provider_is_one_line(model_path, tmp_path):
    result = cli("optimize", "--validate", "--provider", "tensorrt", model_path, tmp_path / "out.onnx")
    if result.returncode == 0:
        pytest.skip("TensorRT works on this machine")
    assert result.returncode == 5 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()


def test_explain_and_json_report(model_path, tmp_path):
    report_path = tmp_path / "report.json"
    result = cli("optimize", "--explain", "--json", report_path, model_path, tmp_path / "out.onnx")
    assert result.returncode == 0, result.stderr
    folded_lines = [line for line in result.stdout.splitlines() if line.startswith("folded  ")]
    assert len(folded_lines) == 1 and "3 branch(es)" in folded_lines[0] and "3x3 stride 1x1" in folded_lines[0]
    report = json.loads(report_path.read_text())
    assert report["schema_version"] == 3 and report["blocks_folded"] == 1
    assert report["op_counts_before"]["Conv"] == 2 and report["op_counts_after"]["Conv"] == 1
    assert report["parameters"]["after"] < report["parameters"]["before"]
    assert report["flops"]["after"] < report["flops"]["before"]


def test_json_to_stdout_keeps_stdout_machine_readable(model_path, tmp_path):
    result = cli("optimize", "--json", "-", model_path, tmp_path / "out.onnx")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["folds"][0]["branches"] == 3
    assert "folded 1 blocks" in result.stderr


def test_inspect_writes_nothing_and_explains(model_path, tmp_path):
    before = sorted(tmp_path.iterdir())
    result = cli("inspect", model_path)
    assert result.returncode == 0, result.stderr
    assert "folded  " in result.stdout and "Conv" in result.stdout
    assert sorted(tmp_path.iterdir()) == before


def test_inspect_lists_refusals(tmp_path):
    b = GraphBuilder(seed=9)
    x = b.input([1, 8, 8, 8])
    y3 = b.conv(x, 8, 8, 3, stride=2)
    y5 = b.conv(x, 8, 8, 5, pad=0)
    path = tmp_path / "bad.onnx"
    onnx.save(b.model([b.op("Add", [y3, y5])]), path)
    result = cli("inspect", path)
    assert "refused [STRIDE_MISMATCH]" in result.stdout


def test_bench_prints_latency_and_speedup(model_path):
    result = cli("bench", "--provider", "cpu", "--runs", "5", "--warmup", "1", model_path)
    assert result.returncode == 0, result.stderr
    assert "original" in result.stdout and "optimized" in result.stdout and "speedup" in result.stdout


def test_quiet_prints_nothing(model_path, tmp_path):
    result = cli("-q", "optimize", model_path, tmp_path / "out.onnx")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


def test_verbose_logs(model_path, tmp_path):
    result = cli("-v", "optimize", model_path, tmp_path / "out.onnx")
    assert result.returncode == 0 and "folding" in result.stderr


def test_malformed_input_shape_is_a_usage_error(model_path, tmp_path):
    result = cli("optimize", "--input-shape", "x:1xAx3", model_path, tmp_path / "out.onnx")
    assert result.returncode == 2 and "NAME:DxDx" in result.stderr


def test_failed_validation_still_writes_the_json_report(model_path, tmp_path):
    report_path = tmp_path / "report.json"
    args = ("optimize", "--validate", "--provider", "cpu", "--rtol", "0", "--json", report_path)
    result = cli(*args, model_path, tmp_path / "out.onnx")
    assert result.returncode == 4 and not (tmp_path / "out.onnx").exists()
    validation = json.loads(report_path.read_text())["validation"]
    assert validation["passed"] is False and validation["outputs"][0]["max_abs_error"] > 0
