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
from .io import check_is_model, load_model, read_model, save_model
from .passes import fold_model
from .progress import step
from .providers import ProviderError, select_provider
from .report import Fold, Refusal, Report
from .stats import model_stats, tensor_shapes
from .validate import ValidationResult, validate
from .validate import validate as validate_models

__version__ = "0.1.0"

__all__ = [
    "Fold",
    "InputModelError",
    "OptimizeResult",
    "OutputPathError",
    "ProviderError",
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


def optimize(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    keep_post_bn: bool = False,
    validate: bool = False,
    provider: str = "auto",
    rtol: float | None = None,
    atol: float = 0.0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> OptimizeResult:
    """Fold every re-parameterizable block of ``model`` into one Conv.

    ``model`` is a ModelProto (left untouched: a copy is optimized) or a path.  With
    ``keep_post_bn`` the BatchNorm after a block's sum stays a separate node (partial fusion).
    With ``validate`` both models run on onnxruntime (``provider``: auto, cpu, cuda, tensorrt) on
    seeded inputs and a mismatch beyond ``atol + rtol * max(1, max|a|)`` raises
    :class:`ValidationError`; ``input_shapes`` fixes symbolic input dimensions.
    Returns the optimized model and a :class:`Report` of folds, refusals, op counts and sizes.
    """
    if validate:
        select_provider(provider)  # an unusable provider fails now, not after the fold (the probe is cached)
    input_external_data = False
    if isinstance(model, onnx.ModelProto):
        check_is_model(model, "model")
        original = model
    elif isinstance(model, (str, os.PathLike)):
        with step(f"loading {model}"):
            loaded = read_model(model)
        original, input_external_data = loaded.model, loaded.external_data
    else:
        raise InputModelError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")
    shapes = tensor_shapes(original, input_shapes)
    stats_before = model_stats(original, shapes)
    if validate or original is model:
        working = onnx.ModelProto()
        working.CopyFrom(original)
    else:
        working = original  # loaded here and needed by nobody else: fold it in place
    with step("folding"):
        report = fold_model(working, keep_post_bn=keep_post_bn)
    log.info("folded %d blocks (%d regions), %d refusals", report.blocks_folded, report.regions_folded, len(report.refusals))
    report.stats_before = stats_before
    report.input_external_data = input_external_data
    report.stats_after = model_stats(working, shapes)
    if validate:
        with step("validating"):
            result = validate_models(
                original, working, provider=provider, seed=seed, rtol=rtol, atol=atol, input_shapes=input_shapes
            )
        report.validation = result
        if not result.passed:
            worst = result.worst
            raise ValidationError(
                f"validation failed on {result.provider}: output '{worst.name}' differs by max|a-b| = "
                f"{worst.max_abs_error:.3g}, over the tolerance {worst.tolerance:.3g} "
                f"(rtol {result.rtol:g}, atol {result.atol:g})",
                report,
            )
    return OptimizeResult(working, report)
