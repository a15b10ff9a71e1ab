"""qarep-onnx: fold re-parameterizable blocks of exported ONNX models into single Convs, exactly.

    >>> import qarep_onnx
    >>> result = qarep_onnx.optimize("model.onnx")          # or an onnx.ModelProto
    >>> result.report.blocks_folded, result.model           # doctest: +SKIP

The input is never modified.  Nothing here prints; progress and details go to the
``qarep_onnx`` logger.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import onnx

from .errors import InputModelError, OutputPathError, QarepError, ValidationError
from .io import check_is_model, load_model, save_model
from .passes import fold_model
from .report import Fold, Refusal, Report
from .validate import ValidationResult, validate

__version__ = "0.1.0"

__all__ = [
    "Fold",
    "InputModelError",
    "OptimizeResult",
    "OutputPathError",
    "QarepError",
    "Refusal",
    "Report",
    "ValidationError",
    "ValidationResult",
    "__version__",
    "load_model",
    "optimize",
    "save_model",
    "validate",
]

log = logging.getLogger("qarep_onnx")


class OptimizeResult(NamedTuple):
    model: onnx.ModelProto
    report: Report


def optimize(model: onnx.ModelProto | str | os.PathLike, *, keep_post_bn: bool = False) -> OptimizeResult:
    """Fold every re-parameterizable block of ``model`` into one Conv.

    ``model`` is a ModelProto (left untouched: a copy is optimized) or a path.  With
    ``keep_post_bn`` the BatchNorm after a block's sum stays a separate node (partial fusion).
    Returns the optimized model and a :class:`Report` of folds, refusals and op counts.
    """
    if isinstance(model, onnx.ModelProto):
        check_is_model(model, "model")
        working = onnx.ModelProto()
        working.CopyFrom(model)
    elif isinstance(model, (str, os.PathLike)):
        working = load_model(model)
    else:
        raise InputModelError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")
    report = fold_model(working, keep_post_bn=keep_post_bn)
    log.info("folded %d blocks (%d regions), %d refusals", report.blocks_folded, report.regions_folded, len(report.refusals))
    return OptimizeResult(working, report)
