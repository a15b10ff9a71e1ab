import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from qarep_onnx.runtime.validation import validate  # noqa: E402


def assert_same_function(original, optimized, rtol=None):
    """The optimized model matches the original run with ORT_DISABLE_ALL, within the dtype's tolerance."""
    result = validate(original, optimized, rtol=rtol, provider="cpu")
    worst = result.worst
    assert result.passed, f"output {worst.name}: max|a-b| {worst.max_abs_error:.3g} > {worst.tolerance:.3g}"
    return result


def count(model, op_type):
    return sum(1 for n in model.graph.node if n.op_type == op_type)


@pytest.fixture
def same_function():
    return assert_same_function
