"""One model through the INT8 pipeline: prepare, place, calibrate, switch, equalize, rank.

:func:`analyse_model` does for one float32 model what both commands need, once, and keeps what it
built (:class:`Pipeline`) so that ``quantize`` writes the Q/DQ model from the very scales and
weights the figures were measured with.  Equalization, when asked, is selected on the selection
sets and confirmed on the held-out sets (every layer in int8 with and without it), and kept only
when both improve; the equalized float model must pass the calibrated validation verdict against
the model before it, or it is not used at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ..runtime.inputs import InputSet
from ..runtime.providers import ProviderChoice
from .calibrate import activation_sqnr, float_runs, limits
from .calibration_methods import predicted_sqnr_db
from .equalize import Pair, equalize, find_pairs
from .layers import Layer, find_layers
from .placement import Placement, place
from .prepare import prepare
from .report import Equalization, EqualizedPair, ModelAnalysis, Settings
from .sensitivity import Candidates, Progress, analyse
from .sqnr import spread
from .switch import SwitchModel
from .weights import weight_report

VALIDATION_SETS = 2  # calibration sets the equalized float model is validated on


@dataclass
class Pipeline:
    """Everything built for one model, reusable by ``quantize``."""

    prepared: onnx.ModelProto
    layers: list[Layer]
    placement: Placement
    limits: dict[str, float]
    candidates: Candidates
    activation: dict[str, float] = field(default_factory=dict)  # layer input -> predicted SQNR (calibration)


def _pipeline(prepared, layers, calibration, holdout, choice, settings: Settings, pairs: list[Pair], references=None) -> Pipeline:
    placement = place(prepared, layers, settings.placement)
    runs = float_runs(prepared, placement.tensors, calibration, holdout, choice, histogram=settings.calib_method != "max",
                      channel_axes={p.tensor: p.channel_axis for p in pairs}, references=references)
    chosen = limits(runs, placement, settings.calib_method, settings.percentile)
    engine = SwitchModel(prepared, layers, placement, chosen, choice, settings.weights, settings.float_precision)
    candidates = Candidates(engine, layers, runs, calibration[:len(runs.selection)], holdout)
    activation = activation_sqnr(runs, placement, chosen, sorted({l.activation for l in layers}))
    return Pipeline(prepared, layers, placement, chosen, candidates, activation)


def _pair_figures(pairs: list[Pair], scales: list[np.ndarray], before: Pipeline, after: Pipeline) -> tuple[EqualizedPair, ...]:
    out = []
    for pair, s in zip(pairs, scales):
        a = before.candidates.runs.stats[pair.tensor].channel_absmax
        key_before, key_after = before.placement.key(pair.tensor), after.placement.key(pair.tensor)
        out.append(EqualizedPair(
            pair.first.name, pair.second.name, pair.tensor, pair.between, int(a.size), spread(a), spread(a / s),
            predicted_sqnr_db(before.candidates.runs.stats[pair.tensor], before.limits[key_before]),
            predicted_sqnr_db(after.candidates.runs.stats[pair.tensor], after.limits[key_after]),
        ))
    return tuple(out)


def _equalized(base: Pipeline, calibration, holdout, choice, settings: Settings, pairs) -> tuple[Pipeline, Equalization]:
    """The equalized pipeline when selection and confirmation both favour it, else ``base``; and the report."""
    from ..runtime.validation import validate

    model, scales = equalize(base.prepared, pairs, {p.tensor: base.candidates.runs.stats[p.tensor].channel_absmax for p in pairs})
    verdict = validate(base.prepared, model, provider=choice.name, inputs=calibration[:VALIDATION_SETS])
    worst = verdict.worst.noise_multiple
    if not verdict.passed:
        report = Equalization(tuple(), kept=False, validation=verdict.status, validation_noise_multiple=worst,
                              reason="the equalized float model failed validation against the model before it: not used")
        return base, report
    after = _pipeline(model, find_layers(model), calibration, holdout, choice, settings, [], base.candidates.runs.references)
    figures = [p.candidates.measure((), on).sqnr_db for p in (base, after) for on in ("selection", "holdout")]
    selected, confirmed = figures[2] > figures[0], figures[3] >= figures[1]
    kept = selected and confirmed
    reason = ("every layer in int8 gains on the calibration and the held-out sets" if kept else
              "every layer in int8 does not gain on the calibration sets" if not selected else
              "the gain on the calibration sets does not hold on the held-out sets")
    report = Equalization(_pair_figures(pairs, scales, base, after), figures[0], figures[2], figures[1], figures[3], kept,
                          reason, verdict.status, worst)
    return (after if kept else base), report


def analyse_model(
    label: str,
    model: onnx.ModelProto,
    calibration: list[InputSet],
    holdout: list[InputSet],
    choice: ProviderChoice,
    settings: Settings,
    folded_names: set[str] = frozenset(),
    sensitivity: bool = False,
    target_sqnr: float = 30.0,
    max_layers: int = 32,
    progress: Progress | None = None,
    references: list | None = None,
    rank_always: bool = True,
) -> tuple[ModelAnalysis, Pipeline | None]:
    """The figures of ``model`` (float32) and the pipeline that measured them (None when it has no layer).

    ``references``: held-out FP32 outputs of the model ``model`` was folded from, to measure against.
    """
    prepared = prepare(model)
    layers = find_layers(prepared)
    analysis = ModelAnalysis(label, weight_report(layers, folded_names))
    if not layers:
        analysis.skipped = "the model has no Conv, ConvTranspose, Gemm or MatMul with a constant weight to quantize"
        return analysis, None
    pairs = find_pairs(prepared, layers) if settings.equalize else []
    pipeline = _pipeline(prepared, layers, calibration, holdout, choice, settings, pairs, references)
    if pairs:
        pipeline, analysis.equalization = _equalized(pipeline, calibration, holdout, choice, settings, pairs)
    elif settings.equalize:
        analysis.equalization = Equalization((), reason="no pair of layers joined by Relu, LeakyRelu, PRelu or nothing")
    roles: dict[str, int] = {}
    for site in pipeline.placement.sites:
        roles[site.role] = roles.get(site.role, 0) + 1
    analysis.placement = roles
    analysis.quantized = pipeline.candidates.measure((), "holdout")
    if sensitivity or settings.equalize:
        analysis.quantized_selection = pipeline.candidates.measure((), "selection")
    if sensitivity:
        weights = analysis.layers if pipeline.layers is layers else weight_report(pipeline.layers, folded_names)
        report = (lambda phase, done, total: progress(f"{label}: {phase}", done, total)) if progress else None
        analysis.sensitivity, analysis.with_suggestion = analyse(
            pipeline.candidates, weights, pipeline.activation, target_sqnr, max_layers, report, settings.exhaustive, rank_always)
    return analysis, pipeline
