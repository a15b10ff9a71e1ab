"""End to end through the command line: summary, exit codes, one-line errors, no partial output."""

import os
import subprocess
import sys

import onnx
import pytest
from builders import BlockSpec, qarep_model
from conftest import assert_same_function, count

import qarep_onnx


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qarep_onnx", *map(str, args)], capture_output=True, text=True, cwd=cwd)


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


def test_version_and_help():
    version = cli("--version")
    assert version.returncode == 0 and qarep_onnx.__version__ in version.stdout
    helped = cli("optimize", "--help")
    assert helped.returncode == 0 and "--keep-post-bn" in helped.stdout


def _bad_inputs(tmp_path, model_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model_path.read_bytes()[:200])
    return {
        "missing": (tmp_path / "nope.onnx", tmp_path / "o.onnx", 2),
        "directory": (tmp_path, tmp_path / "o.onnx", 2),
        "empty": (empty, tmp_path / "o.onnx", 2),
        "random bytes": (noise, tmp_path / "o.onnx", 2),
        "truncated": (truncated, tmp_path / "o.onnx", 2),
        "output folder missing": (model_path, tmp_path / "no" / "o.onnx", 3),
        "output is a directory": (model_path, tmp_path, 3),
        "output is the input": (model_path, model_path, 3),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "directory", "empty", "random bytes", "truncated", "output folder missing", "output is a directory", "output is the input"],
)
def test_bad_input_gives_one_line_and_an_exit_code(case, tmp_path, model_path):
    source, out, code = _bad_inputs(tmp_path, model_path)[case]
    before = set(tmp_path.rglob("*"))
    result = cli("optimize", source, out)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qarep-onnx: error:") and "Traceback" not in result.stderr
    assert set(tmp_path.rglob("*")) == before  # no output, no temporary file left behind


def test_same_file_with_force_overwrites(model_path):
    result = cli("optimize", "--force", model_path, model_path)
    assert result.returncode == 0, result.stderr
    assert count(onnx.load(model_path), "Conv") == 1


def test_usage_error_is_reported_by_click(tmp_path):
    result = cli("optimize", tmp_path / "only-one-arg.onnx")
    assert result.returncode == 2 and "Missing argument" in result.stderr
