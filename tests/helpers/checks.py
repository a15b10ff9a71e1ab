"""Checks every fold test makes: the same function on onnxruntime, node counts, the command line."""

import subprocess
import sys

import onnx

from qarep_onnx.runtime.validation import validate


def assert_valid_if_original_was(original, optimized):
    """What the fold writes passes onnx.checker's full check (types and shapes too) whenever the original does."""
    try:
        onnx.checker.check_model(original, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return
    onnx.checker.check_model(optimized, full_check=True)


def assert_same_function(original, optimized, rtol=None, shapes=None):
    """The optimized model matches the original run with ORT_DISABLE_ALL, within the dtype's tolerance
    (``shapes``: sizes for symbolic input dimensions), and is valid ONNX whenever the original is."""
    assert_valid_if_original_was(original, optimized)
    result = validate(original, optimized, rtol=rtol, provider="cpu", input_shapes=shapes)
    worst = result.worst
    assert result.passed, f"output {worst.name}: max|a-b| {worst.max_abs_error:.3g} > {worst.tolerance:.3g}"
    return result


def count(model, op_type):
    return sum(1 for n in model.graph.node if n.op_type == op_type)


def cli(*args, cwd=None):
    """Run ``python -m qarep_onnx ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "qarep_onnx", *map(str, args)], capture_output=True, text=True, cwd=cwd)
