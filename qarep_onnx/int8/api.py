"""The INT8 calls: :func:`int8_report` (what int8 does to a model) and :func:`quantize` (fold, then write Q/DQ).

Both take a ModelProto (never modified) or a path, never print, and return data.  They log the
long steps on the ``qarep_onnx.progress`` logger and report finer progress through ``progress``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import replace
from typing import NamedTuple, Sequence

import onnx

from ..adapters import ModelLike, adapt
from ..api import optimize_loaded
from ..errors import QarepError, UsageError
from ..io import LoadedModel
from ..progress import step
from ..runtime.inputs import InputSet
from ..runtime.providers import select_provider
from .analysis import Pipeline, analyse_model
from .calibrate import run_model
from .calibration_methods import CALIB_METHODS, DEFAULT_CALIB_METHOD, DEFAULT_PERCENTILE
from .datasets import RANDOM_NOTE, choose_inputs
from .exclude import resolve
from .flops import estimate_at_input_shapes
from .measure import measure, non_numeric
from .placement import PLACEMENTS
from .precision import FLOAT_PRECISIONS, emulate_fp16
from .prepare import float32_reason
from .qdq import WEIGHT_FORMS, build_qdq, qdq_layout
from .report import Int8Report, QuantizeReport, Settings
from .sensitivity import DEFAULT_MAX_LAYERS, DEFAULT_TARGET_SQNR_DB, Progress

log = logging.getLogger("qarep_onnx")

Files = Sequence[str | os.PathLike | InputSet]


class QuantizeResult(NamedTuple):
    model: onnx.ModelProto  # the Q/DQ model
    report: QuantizeReport


def _model_of(model: ModelLike) -> onnx.ModelProto:
    """The model as a proto (a path, a proto, a graphsurgeon graph or an ONNXProgram, as optimize takes them)."""
    with step(f"loading {model}") if isinstance(model, (str, os.PathLike)) else contextlib.nullcontext():
        return adapt(model).loaded.model


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UsageError(f"choose one of {', '.join(allowed)}", option=name, value=value)


def _settings(target_sqnr, max_layers, samples, provider, placement, calib_method, percentile, float_precision, weights,
              equalize, exhaustive) -> Settings:
    if provider == "tensorrt":
        raise UsageError(
            "the INT8 figures are measured on onnxruntime's CPU or CUDA provider (the Q/DQ nodes executed as "
            "written); TensorRT's own INT8 engine is not built here: use cpu, cuda or auto", option="provider", value=provider)
    if not math.isfinite(target_sqnr):
        raise UsageError("not a finite number of dB", option="target_sqnr", value=target_sqnr)
    if max_layers < 1:
        raise UsageError("measure at least one layer", option="max_layers", value=max_layers)
    if samples < 1:
        raise UsageError("draw at least one calibration set", option="samples", value=samples)
    if not (math.isfinite(percentile) and 50.0 <= percentile <= 100.0):
        raise UsageError("give a percentage between 50 and 100", option="percentile", value=percentile)
    for name, value, allowed in (("placement", placement, PLACEMENTS), ("calib_method", calib_method, CALIB_METHODS),
                                 ("float_precision", float_precision, FLOAT_PRECISIONS), ("weights", weights, WEIGHT_FORMS)):
        _choice(name, value, allowed)
    return Settings(placement, calib_method, percentile, float_precision, weights, bool(equalize), bool(exhaustive))


def int8_report(
    model: ModelLike,
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
    placement: str = "tensorrt",
    calib_method: str = DEFAULT_CALIB_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    float_precision: str = "fp16",
    weights: str = "int8",
    equalize: bool = False,
    exhaustive: bool = False,
    progress: Progress | None = None,
) -> Int8Report:
    """What post-training int8 does to ``model``, and to its folded form when it still has foldable blocks.

    Per layer: the weight figures (:mod:`.weights`, no calibration).  End to end: the model in Q/DQ
    int8 as TensorRT takes it (``placement`` "tensorrt" or "narrow", :mod:`.placement`), scales from
    ``calib`` (``.npz``/``.npy`` files or input sets; random normal sets when none) by
    ``calib_method`` (max, percentile with ``percentile``, entropy), measured on held-out sets
    (``holdout``, or the last fifth of ``calib``) with the layers left in float computed in
    ``float_precision`` (fp16 or fp32).  For the form ``quantize`` would write (the folded one when the
    model folds): with ``equalize``, cross-layer equalization, kept only when the calibration and the
    held-out sets both gain; with ``sensitivity``, layers ranked and the set to keep in float for
    ``target_sqnr`` dB selected on calibration data and confirmed on the held-out sets (at most
    ``max_layers`` measured; ``exhaustive`` for the slow reference search).  ``provider``: auto, cpu or
    cuda.  ``progress(phase, done, total)`` is called as the analysis goes.
    """
    settings = _settings(target_sqnr, max_layers, samples, provider, placement, calib_method, percentile, float_precision,
                         weights, equalize, exhaustive)
    original = _model_of(model)
    choice = select_provider(provider)
    reason = float32_reason(original)
    inputs = None if reason else choose_inputs(original, calib, holdout, samples, seed, input_shapes)
    folded = optimize_loaded(LoadedModel(original, (), 0), owned=False, input_shapes=input_shapes)
    target_form = "folded" if folded.report.regions_folded else "as given"
    # the sensitivity analysis and equalization serve the form quantize writes: the folded one when the model folds
    given_settings = settings if target_form == "as given" else replace(settings, equalize=False)
    given, pipeline = _analysis("as given", original, inputs, choice, given_settings, set(),
                                sensitivity and target_form == "as given", target_sqnr, max_layers, progress)
    report = Int8Report(given, blocks_unfolded=folded.report.blocks_folded, regions_unfolded=folded.report.regions_folded,
                        provider=choice.name, settings=settings)
    if folded.report.regions_folded:
        names = {f.node for f in folded.report.folds if not f.graph}
        references = pipeline.candidates.runs.references if pipeline is not None else None
        report.folded, _ = _analysis("folded", folded.model, inputs, choice, settings, names, sensitivity, target_sqnr,
                                     max_layers, progress, references)
    if inputs is not None and inputs[2].random:
        report.notes.append(RANDOM_NOTE)
    report.notes += _unmeasured_outputs(pipeline)
    return report


def _unmeasured_outputs(pipeline: Pipeline | None) -> list[str]:
    """A note for each output that holds no numbers (a label table): no SQNR measures it."""
    if pipeline is None:
        return []
    runs = pipeline.candidates.runs
    return [f"output '{name}' holds no numbers: no SQNR measures it" for name in non_numeric(runs.output_names, runs.references)]


def _analysis(label, model, inputs, choice, settings, folded_names, sensitivity, target_sqnr, max_layers, progress,
              references=None):
    from .report import ModelAnalysis
    from .weights import weight_report

    reason = float32_reason(model)
    if reason is not None or inputs is None:
        from .layers import find_layers
        from .prepare import prepare

        analysis = ModelAnalysis(label, weight_report(find_layers(prepare(model)), folded_names))
        analysis.skipped = reason or ""
        return analysis, None
    calibration, holdout, described = inputs
    noun = "model as given" if label == "as given" else f"{label} model"
    with step(f"measuring the {noun} in int8"):
        analysis, pipeline = analyse_model(label, model, calibration, holdout, choice, settings, folded_names, sensitivity,
                                           target_sqnr, max_layers, progress, references)
    analysis.inputs = described
    return analysis, pipeline


def quantize(
    model: ModelLike,
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
    placement: str = "tensorrt",
    calib_method: str = DEFAULT_CALIB_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    float_precision: str = "fp16",
    weights: str = "int8",
    equalize: bool = False,
    exhaustive: bool = False,
    progress: Progress | None = None,
) -> QuantizeResult:
    """Fold ``model`` (as :func:`qarep_onnx.optimize` does, unless ``fold=False``), then quantize it to Q/DQ int8.

    ``exclude``: layers to keep in float, by node name (of the model after the fold, as
    :func:`int8_report` lists them), layer op type (``"Gemm"``) or regular expression matching a whole
    name (``"/head/.*"``); or ``"auto"`` for the set the sensitivity analysis selects for
    ``target_sqnr`` on the calibration sets and confirms on the held-out sets.  The other options are
    those of :func:`int8_report`; ``weights`` "int8" stores quantized weights as int8 behind a
    DequantizeLinear, "float" as float behind a Q/DQ pair.  The Q/DQ model is run on onnxruntime on
    the held-out sets before it is returned; its measured SQNR is in the report.  A float16 or
    float64 model is a :class:`UsageError`.
    """
    settings = _settings(target_sqnr, max_layers, samples, provider, placement, calib_method, percentile, float_precision,
                         weights, equalize, exhaustive)
    original = _model_of(model)
    reason = float32_reason(original)
    if reason:
        raise UsageError(reason)
    choice = select_provider(provider)
    calibration, holdout_sets, described = choose_inputs(original, calib, holdout, samples, seed, input_shapes)
    working, fold_report, references = _folded(original, fold, input_shapes, holdout_sets, choice)
    auto = isinstance(exclude, str) and exclude == "auto"
    with step("measuring the model in int8"):
        analysis, pipeline = analyse_model("folded" if fold else "as given", working, calibration, holdout_sets, choice,
                                           settings, set(), auto, target_sqnr, max_layers, progress, references,
                                           rank_always=False)
    names, excluded = _layers_and_exclusions(pipeline, analysis, exclude, auto, fold)
    qdq, measured = _write(pipeline, names, excluded, settings, holdout_sets, choice)
    report = QuantizeReport(
        fold=fold_report, exclude_mode="auto" if auto else ("explicit" if excluded else "none"), excluded=tuple(excluded),
        layout=qdq_layout(qdq, names, pipeline.placement.active(frozenset(names) - set(excluded))), inputs=described,
        measurement=measured, all_quantized=analysis.quantized if excluded else None, sensitivity=analysis.sensitivity,
        equalization=analysis.equalization, settings=settings, provider=choice.name,
    )
    if fold_report is not None:
        report.flops_shapes = estimate_at_input_shapes(original, working, fold_report, calibration[0], input_shapes)
    _notes(report, described.random, target_sqnr)
    report.notes += _unmeasured_outputs(pipeline)
    return QuantizeResult(qdq, report)


def _layers_and_exclusions(pipeline: Pipeline | None, analysis, exclude, auto: bool, fold: bool) -> tuple[list[str], list[str]]:
    """The layers' names, and those ``exclude`` keeps in float (the analysis' choice for "auto")."""
    if pipeline is None:
        raise UsageError("the model has no Conv, ConvTranspose, Gemm or MatMul with a constant weight: nothing to quantize")
    names = [l.name for l in pipeline.layers]
    patterns = [] if auto else ([exclude] if isinstance(exclude, str) else list(exclude or []))
    excluded = list(analysis.sensitivity.suggested) if auto else resolve(patterns, pipeline.layers, pipeline.prepared, fold)
    if set(names) <= set(excluded):
        raise UsageError("keeps every layer in float: nothing would be quantized", option="exclude",
                         value="auto" if auto else " ".join(patterns))
    return names, excluded


def _folded(original: onnx.ModelProto, fold: bool, input_shapes, holdout_sets, choice):
    """The model to quantize, the fold's report (None without folding), and the FP32 held-out outputs of the
    model as given when the fold changed it (the figures measure against the model the user gave)."""
    if not fold:
        return original, None, None
    folded = optimize_loaded(LoadedModel(original, (), 0), owned=False, input_shapes=input_shapes)
    references = None
    if folded.report.regions_folded:
        with step("running the model as given on the held-out sets"):
            references = run_model(original, holdout_sets, choice, "the model")
    return folded.model, folded.report, references


def _write(pipeline: Pipeline, names, excluded, settings: Settings, holdout_sets, choice):
    """The Q/DQ model (checked), and its measurement on the held-out sets."""
    quantized = [n for n in names if n not in set(excluded)]
    with step("writing the Q/DQ model"):
        qdq = build_qdq(pipeline.prepared, pipeline.layers, pipeline.placement, pipeline.limits, quantized, settings.weights)
        try:
            onnx.checker.check_model(qdq, full_check=True)
        except Exception as exc:  # the checker raises ValidationError, InferenceError ...
            raise QarepError(f"the Q/DQ model written here does not pass onnx.checker: {str(exc).splitlines()[0][:200]}") from exc
    measured_model = qdq
    if settings.float_precision == "fp16" and excluded:
        measured_model = emulate_fp16(qdq, [l for l in pipeline.layers if l.name in set(excluded)])
    runs = pipeline.candidates.runs
    with step("measuring the Q/DQ model"):
        measured = measure(measured_model, holdout_sets, runs.output_names, runs.references, choice, tuple(excluded),
                           "the Q/DQ model")
    return qdq, measured


def _notes(report: QuantizeReport, random: bool, target_sqnr: float) -> None:
    if random:
        report.notes.append(RANDOM_NOTE)
    s = report.sensitivity
    if s is not None and s.selected and not s.suggested:
        report.notes.append(f"the {len(s.selected)} layer(s) selected on the calibration sets gained nothing on the "
                            "held-out sets: every layer stays in int8")
    elif s is not None and s.dropped:
        report.notes.append(f"{len(s.dropped)} of the {len(s.selected)} layer(s) selected on the calibration sets did not "
                            "hold their gain on the held-out sets and stay in int8")
    if s is not None and not s.reached:
        report.notes.append(f"the held-out sets do not reach {target_sqnr:g} dB with the layers kept in float")
    if report.flops_shapes:
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in report.flops_shapes.items())
        report.notes.append(f"FLOPs estimated at the shapes the calibration inputs used ({shapes}; per sample)")
