"""Errors speak the library's words in Python and the flags' words on the command line."""

from pathlib import Path

import pytest
from helpers.checks import cli

import qarep_onnx

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "qarep_detector__torchscript.onnx"


def test_a_library_error_names_the_option_and_the_cli_names_the_flag(tmp_path):
    missing = tmp_path / "nothing.npz"
    with pytest.raises(qarep_onnx.UsageError) as error:
        qarep_onnx.optimize(str(FIXTURE), validate=True, provider="cpu", inputs=[missing])
    assert error.value.option == "inputs" and error.value.value == missing
    assert str(error.value) == f"input file {missing}: no such file"
    result = cli("optimize", "--validate", "--provider", "cpu", "--inputs", missing, FIXTURE, tmp_path / "out.onnx")
    assert result.returncode == 2
    assert result.stderr.strip() == f"qarep-onnx: error: --inputs {missing}: no such file"


def test_an_example_is_given_in_the_words_of_each_side(tmp_path):
    error = qarep_onnx.UsageError("input 'x' declares no shape; give it", option="input_shapes", example="x:1x3x8x8")
    assert str(error) == "input 'x' declares no shape; give it, e.g. input shape x:1x3x8x8"
    assert error.render(lambda option: "--input-shape") == "input 'x' declares no shape; give it, e.g. --input-shape x:1x3x8x8"
