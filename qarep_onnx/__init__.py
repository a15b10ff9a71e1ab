"""qarep-onnx: fold re-parameterizable blocks of exported ONNX models into single Convs, exactly.

    >>> import qarep_onnx
    >>> result = qarep_onnx.optimize("model.onnx")          # or an onnx.ModelProto
    >>> result.report.blocks_folded, result.model           # doctest: +SKIP

The input is never modified.  Nothing here prints; progress and details go to the
``qarep_onnx`` logger.  Names are imported on first use, so that ``import qarep_onnx`` (and the
command line's start-up) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "optimize": "api",
    "OptimizeResult": "api",
    "InputModelError": "errors",
    "OutputPathError": "errors",
    "QarepError": "errors",
    "UsageError": "errors",
    "ValidationError": "errors",
    "ProviderError": "errors",
    "Fold": "fold.report",
    "Reason": "errors",
    "Report": "fold.report",
    "ValidationResult": "runtime.validation",
    "validate": "runtime.validation",
    "load_model": "io",
    "save_model": "save",
    # INT8 (issue 11)
    "int8_report": "int8.api",
    "quantize": "int8.api",
    "QuantizeResult": "int8.api",
    "Int8Report": "int8.report",
    "QuantizeReport": "int8.report",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qarep_onnx' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names above are imported lazily
    from .api import OptimizeResult, optimize
    from .errors import (
        InputModelError,
        OutputPathError,
        ProviderError,
        QarepError,
        Reason,
        UsageError,
        ValidationError,
    )
    from .fold.report import Fold, Report
    from .int8.api import QuantizeResult, int8_report, quantize
    from .int8.report import Int8Report, QuantizeReport
    from .io import load_model
    from .runtime.validation import ValidationResult, validate
    from .save import save_model
