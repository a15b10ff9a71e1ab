"""Checks every fold test makes: the same function on onnxruntime, node counts, the command line."""

import subprocess
import sys

from qarep_onnx.runtime.validation import validate


def assert_same_function(original, optimized, rtol=None, shapes=None):
    """The optimized model matches the original run with ORT_DISABLE_ALL, within the dtype's tolerance
    (``shapes``: sizes for symbolic input dimensions)."""
    result = validate(original, optimized, rtol=rtol, provider="cpu", input_shapes=shapes)
    worst = result.worst
    assert result.passed, f"output {worst.name}: max|a-b| {worst.max_abs_error:.3g} > {worst.tolerance:.3g}"
    return result


def count(model, op_type):
    return sum(1 for n in model.graph.node if n.op_type == op_type)


def cli(*args, cwd=None):
    """Run ``python -m qarep_onnx ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "qarep_onnx", *map(str, args)], capture_output=True, text=True, cwd=cwd)
