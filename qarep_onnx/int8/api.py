"""The INT8 calls: :func:`int8_report` (what int8 does to a model) and :func:`quantize` (fold, then write Q/DQ).

Both take a ModelProto (never modified) or a path, never print, and return data.  They log the
long steps on the ``qarep_onnx.progress`` logger and report finer progress through ``progress``.
"""

from __future__ import annotations

import logging
import math
import os
from typing import NamedTuple, Sequence

import onnx

from ..api import optimize_loaded
from ..errors import InputModelError, UsageError
from ..io import LoadedModel, check_is_model, read_model
from ..progress import step
from ..runtime.inputs import InputSet
from ..runtime.providers import ProviderChoice, select_provider
from .calibrate import float_runs
from .datasets import RANDOM_NOTE, choose_inputs
from .layers import Layer, find_layers
from .measure import measure
from .prepare import float32_reason, prepare
from .qdq import build_qdq, mark_inferred, qdq_layout
from .report import Inputs, Int8Report, ModelAnalysis, QuantizeReport
from .sensitivity import (
    DEFAULT_MAX_LAYERS,
    DEFAULT_TARGET_SQNR_DB,
    Candidates,
    Progress,
    analyse,
)
from .weights import weight_report

log = logging.getLogger("qarep_onnx")

Files = Sequence[str | os.PathLike | InputSet]


class QuantizeResult(NamedTuple):
    model: onnx.ModelProto  # the Q/DQ model
    report: QuantizeReport


def _model_of(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        check_is_model(model, "model")
        return model
    if isinstance(model, (str, os.PathLike)):
        with step(f"loading {model}"):
            return read_model(model).model
    raise InputModelError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")


def _check_arguments(target_sqnr: float, max_layers: int, samples: int, provider: str) -> None:
    if provider == "tensorrt":
        raise UsageError(
            "--provider tensorrt: the INT8 figures are measured on onnxruntime's CPU or CUDA provider (the Q/DQ nodes "
            "executed as written); TensorRT's own INT8 engine is not built here: use cpu, cuda or auto"
        )
    if not math.isfinite(target_sqnr):
        raise UsageError(f"--target-sqnr {target_sqnr} is not a finite number of dB")
    if max_layers < 1:
        raise UsageError(f"--max-layers {max_layers}: measure at least one layer")
    if samples < 1:
        raise UsageError(f"--samples {samples}: draw at least one calibration set")


class _Prepared(NamedTuple):
    model: onnx.ModelProto
    layers: list[Layer]


def _prepared(model: onnx.ModelProto) -> _Prepared:
    working = prepare(model)
    mark_inferred(working)
    return _Prepared(working, find_layers(working))


def _candidates(prepared: _Prepared, original, calibration, holdout, choice: ProviderChoice) -> Candidates:
    tensors = sorted({layer.activation for layer in prepared.layers})
    with step("calibrating activation ranges"):
        runs = float_runs(prepared.model, tensors, calibration, holdout, choice)
    return Candidates(prepared.model, original, prepared.layers, runs, holdout, choice)


def _analysis(
    label: str,
    model: onnx.ModelProto,
    inputs: tuple[list[InputSet], list[InputSet], Inputs] | None,
    choice: ProviderChoice,
    folded_names: set[str],
    sensitivity: bool,
    target_sqnr: float,
    max_layers: int,
    progress: Progress | None,
) -> ModelAnalysis:
    prepared = _prepared(model)
    analysis = ModelAnalysis(label, weight_report(prepared.layers, folded_names))
    reason = float32_reason(model)
    if reason is not None:
        analysis.skipped = reason
        return analysis
    if not prepared.layers:
        analysis.skipped = "the model has no Conv, ConvTranspose, Gemm or MatMul with a constant weight to quantize"
        return analysis
    calibration, holdout, described = inputs
    analysis.inputs = described
    candidates = _candidates(prepared, model, calibration, holdout, choice)
    noun = "model as given" if label == "as given" else f"{label} model"
    with step(f"measuring the {noun} in int8"):
        analysis.quantized = candidates.measure(())
    if sensitivity:
        with step(f"ranking the layers of the {noun}"):
            analysis.sensitivity, analysis.with_suggestion = analyse(
                candidates, analysis.layers, analysis.quantized, target_sqnr, max_layers,
                (lambda phase, done, total: progress(f"{label}: {phase}", done, total)) if progress else None,
            )
    return analysis


def int8_report(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    calib: Files | None = None,
    holdout: Files | None = None,
    samples: int = 4,
    seed: int = 0,
    target_sqnr: float = DEFAULT_TARGET_SQNR_DB,
    max_layers: int = DEFAULT_MAX_LAYERS,
    sensitivity: bool = True,
    provider: str = "auto",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    progress: Progress | None = None,
) -> Int8Report:
    """What post-training int8 does to ``model``, and to its folded form when it still has foldable blocks.

    Per layer: the weight figures (:mod:`.weights`, no calibration).  End to end: the model
    quantized the way TensorRT's explicit quantization takes it (:mod:`.qdq`), calibrated on
    ``calib`` (``.npz``/``.npy`` files or input sets; random normal sets when none) and measured on
    held-out sets (``holdout``, or the last fifth of ``calib``).  With ``sensitivity``: layers ranked
    by cost and the set to keep in float for ``target_sqnr`` dB (at most ``max_layers`` measured).
    ``provider``: auto, cpu or cuda.  ``progress(phase, done, total)`` is called as the sensitivity
    analysis goes.
    """
    _check_arguments(target_sqnr, max_layers, samples, provider)
    original = _model_of(model)
    choice = select_provider(provider)
    reason = float32_reason(original)
    inputs = None if reason else choose_inputs(original, calib, holdout, samples, seed, input_shapes)
    folded = optimize_loaded(LoadedModel(original, (), 0), owned=False, input_shapes=input_shapes)
    common = dict(choice=choice, sensitivity=sensitivity, target_sqnr=target_sqnr, max_layers=max_layers, progress=progress)
    report = Int8Report(
        _analysis("as given", original, inputs, folded_names=set(), **common),
        blocks_unfolded=folded.report.blocks_folded,
        regions_unfolded=folded.report.regions_folded,
        provider=choice.name,
    )
    if folded.report.regions_folded:
        names = {f.node for f in folded.report.folds if not f.graph}
        report.folded = _analysis("folded", folded.model, inputs, folded_names=names, **common)
    if inputs is not None and inputs[2].random:
        report.notes.append(RANDOM_NOTE)
    return report


def quantize(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    calib: Files | None = None,
    holdout: Files | None = None,
    samples: int = 4,
    seed: int = 0,
    exclude: Sequence[str] | str | None = None,
    fold: bool = True,
    target_sqnr: float = DEFAULT_TARGET_SQNR_DB,
    max_layers: int = DEFAULT_MAX_LAYERS,
    provider: str = "auto",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    progress: Progress | None = None,
) -> QuantizeResult:
    """Fold ``model`` (as :func:`qarep_onnx.optimize` does, unless ``fold=False``), then quantize it to Q/DQ int8.

    ``exclude``: layer names (ONNX node names of the model after the fold, as :func:`int8_report`
    lists them) to keep in float, or ``"auto"`` for the set the sensitivity analysis suggests for
    ``target_sqnr``.  The Q/DQ model is run on onnxruntime on the held-out sets before it is
    returned; its measured SQNR is in the report.  A float16 or float64 model is a
    :class:`UsageError`.
    """
    _check_arguments(target_sqnr, max_layers, samples, provider)
    original = _model_of(model)
    reason = float32_reason(original)
    if reason:
        raise UsageError(reason)
    choice = select_provider(provider)
    calibration, holdout_sets, described = choose_inputs(original, calib, holdout, samples, seed, input_shapes)
    fold_report = None
    working = original
    if fold:
        folded = optimize_loaded(LoadedModel(original, (), 0), owned=False, input_shapes=input_shapes)
        working, fold_report = folded.model, folded.report
    prepared = _prepared(working)
    names = [layer.name for layer in prepared.layers]
    if not names:
        raise UsageError("the model has no Conv, ConvTranspose, Gemm or MatMul with a constant weight: nothing to quantize")
    auto = isinstance(exclude, str) and exclude == "auto"
    if isinstance(exclude, str) and not auto:
        exclude = [exclude]
    explicit = list(exclude or []) if not auto else []
    _check_names(explicit, names, working, fold)
    if set(names) <= set(explicit):
        raise UsageError("--exclude keeps every layer in float: nothing would be quantized")
    candidates = _candidates(prepared, working, calibration, holdout_sets, choice)
    sensitivity = all_quantized = None
    if auto:
        with step("measuring every layer in int8"):
            all_quantized = candidates.measure(())
        with step("ranking layers"):
            sensitivity, _ = analyse(candidates, weight_report(prepared.layers), all_quantized, target_sqnr, max_layers, progress)
        excluded = list(sensitivity.suggested)
        if set(names) <= set(excluded):
            raise UsageError(f"--target-sqnr {target_sqnr:g} dB is reached only with every layer in float: nothing to quantize")
    else:
        excluded = list(dict.fromkeys(explicit))
    with step("writing the Q/DQ model"):
        qdq = build_qdq(prepared.model, candidates.runs.ranges, [n for n in names if n not in set(excluded)], working)
    with step("measuring the Q/DQ model"):
        measured = measure(qdq, holdout_sets, candidates.runs, choice, tuple(excluded), "the Q/DQ model")
    if excluded and all_quantized is None:
        all_quantized = candidates.measure(())
    layout = qdq_layout(qdq, names)
    report = QuantizeReport(
        fold=fold_report, exclude_mode="auto" if auto else ("explicit" if excluded else "none"), excluded=tuple(excluded),
        layout=layout, inputs=described, measurement=measured, all_quantized=all_quantized, sensitivity=sensitivity,
        provider=choice.name,
    )
    missed = [n for n in layout.float_layers if n not in set(excluded)]
    if missed:
        report.notes.append(
            f"onnxruntime's quantizer left {len(missed)} layer(s) in float without being asked: {', '.join(missed[:5])}"
            + (" ..." if len(missed) > 5 else "")
        )
    if described.random:
        report.notes.append(RANDOM_NOTE)
    if sensitivity is not None and not sensitivity.reached:
        report.notes.append(
            f"no set of the {len(sensitivity.ranking)} layers measured reaches {target_sqnr:g} dB; the best one seen is kept in float"
        )
    return QuantizeResult(qdq, report)


def _check_names(exclude: list[str], names: list[str], model: onnx.ModelProto, folded: bool) -> None:
    layers = set(names)
    nodes = {n.name: n.op_type for n in model.graph.node}
    for name in exclude:
        if name in layers:
            continue
        if name in nodes:
            raise UsageError(f"--exclude {name}: a {nodes[name]} node is not a quantized layer (Conv, ConvTranspose, Gemm or MatMul with a constant weight)")
        where = "the folded model" if folded else "the model"
        close = [n for n in names if name.lower() in n.lower() or n.lower() in name.lower()][:3]
        hint = f"; did you mean {', '.join(close)}?" if close else "; `qarep-onnx int8` lists the layers"
        raise UsageError(f"--exclude {name}: no layer of {where} has that name{hint}")
