"""The library's main call: fold a model, measure it, and optionally prove it on onnxruntime."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, NamedTuple, Sequence

import onnx

from .adapters import ModelLike, adapt
from .errors import ValidationError
from .fold.passes import fold_model
from .fold.report import Report
from .io import LoadedModel
from .progress import step
from .runtime.inputs import InputSet
from .runtime.models import prepare_original
from .runtime.providers import select_provider
from .runtime.sessions import Workspace
from .runtime.validation import validate_fold
from .stats import model_stats, tensor_shapes

log = logging.getLogger("qarep_onnx")


class OptimizeResult(NamedTuple):
    model: Any  # the folded model, in the form it was given (a ModelProto for a path or an ONNXProgram)
    report: Report


def optimize(
    model: ModelLike,
    *,
    keep_post_bn: bool = False,
    validate: bool = False,
    provider: str = "auto",
    rtol: float | None = None,
    atol: float = 0.0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    samples: int = 1,
    inputs: Sequence[str | os.PathLike | InputSet] | None = None,
) -> OptimizeResult:
    """Fold every re-parameterizable block of ``model`` into one Conv.

    ``model`` is an ``onnx.ModelProto`` (left untouched: a copy is optimized), a path, an
    ``onnx_graphsurgeon.Graph`` (the result is a new graph) or the ``ONNXProgram`` of
    ``torch.onnx.export(..., dynamo=True)`` (the result is a ModelProto).  With ``keep_post_bn``
    the BatchNorm after a block's sum stays a separate node (partial fusion).  With ``validate``
    both models run on onnxruntime (``provider``: auto, cpu, cuda, tensorrt) on ``inputs`` (files
    or input sets) or ``samples`` seeded random sets, and a verdict other than a pass raises
    :class:`ValidationError`: a difference beyond the tolerance calibrated to the model's own float
    noise (or ``atol + rtol * max(1, max|a|)`` when ``rtol`` is given), or inputs that never reached
    the folds.  ``input_shapes`` fixes symbolic input dimensions.  Returns the optimized model and a
    :class:`Report` of folds, refusals, op counts and sizes.
    """
    with step(f"loading {model}" if isinstance(model, (str, os.PathLike)) else "reading the model"):
        adapted = adapt(model)
    folded = optimize_loaded(
        adapted.loaded, owned=adapted.owned, keep_post_bn=keep_post_bn, validate=validate, provider=provider,
        rtol=rtol, atol=atol, input_shapes=input_shapes, seed=seed, samples=samples, inputs=inputs,
    )
    return OptimizeResult(adapted.back(folded.model), folded.report)


def optimize_loaded(
    loaded: LoadedModel,
    *,
    owned: bool,
    keep_post_bn: bool = False,
    validate: bool = False,
    provider: str = "auto",
    rtol: float | None = None,
    atol: float = 0.0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    samples: int = 1,
    inputs: Sequence[str | os.PathLike | InputSet] | None = None,
) -> OptimizeResult:
    """:func:`optimize` on a model already read; ``owned``: nobody else holds it, so it may be folded in place."""
    # An unusable provider fails now, not after the fold.
    choice = select_provider(provider) if validate else None
    original = loaded.model
    shapes = tensor_shapes(original, input_shapes)
    stats_before = model_stats(original, shapes, input_shapes)
    with Workspace() if validate else contextlib.nullcontext() as workspace:
        # The original goes to the validation's workspace before the fold, which may change it in place.
        external_file = loaded.path if loaded.external_data else None
        before = prepare_original(original, workspace, choice, rtol is None, seed, external_file) if validate else None
        if owned:
            working = original  # loaded here and needed by nobody else: fold it in place
        else:
            working = onnx.ModelProto()
            working.CopyFrom(original)
        with step("folding"):
            report = fold_model(working, keep_post_bn=keep_post_bn, known_shapes=shapes)
        log.info("folded %d blocks (%d regions), %d refusals", report.blocks_folded, report.regions_folded,
                 len(report.refusals))
        report.stats_before = stats_before
        report.input_external_data = loaded.external_data
        report.stats_after = model_stats(working, shapes, input_shapes)
        if validate:
            with step("validating"):
                report.validation = validate_fold(
                    before, working, report.folds, workspace, provider=provider, seed=seed, samples=samples,
                    inputs=inputs, rtol=rtol, atol=atol, input_shapes=input_shapes,
                )
            if not report.validation.passed:
                raise ValidationError(report.validation.summary(), report)
    return OptimizeResult(working, report)
