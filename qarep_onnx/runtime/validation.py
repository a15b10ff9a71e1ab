"""Check on onnxruntime that a candidate model computes what the original computed, and say how sure that is.

Both models run on the same inputs with every graph optimization disabled (otherwise onnxruntime
folds Conv+BN inside the reference too and hides fold errors).  How far apart two correct models
may be depends on the network: a deep network's float32 noise is far above a single block's.  So
the tolerance is calibrated to the *original* model on the same inputs and provider: its noise
floor per output is the larger of

* how far onnxruntime's own graph optimizations (ORT_ENABLE_ALL against ORT_DISABLE_ALL) move it,
* how far a random one-ulp change of every finite weight moves it (the rounding a fold commits once),

never below one ulp of the output's own scale; an output passes when ``max|a - b| <= atol + FACTOR
* floor``.  Explicit ``rtol`` replaces the calibration by ``atol + rtol * max(1, max|a|)``; a model
whose floor cannot be measured falls back to :data:`~.noise.DEFAULT_RTOL`.

What it costs: four sessions, opened one at a time from model files (:mod:`.sessions`): the
original with optimizations off (the reference), the original with optimizations on, the original
with every weight moved one ulp, and the candidate.  Each input set is made (or read) again for each
session and the reference outputs wait on disk, so memory holds one session and one input set,
whatever the number of sets.  With an explicit rtol only the first and the last run.

A verdict must have measured something: an output that is empty for every input set proves
nothing, and folds inside If/Loop/Scan bodies must have run (:mod:`.reach`).  onnxruntime's CPU
provider has no float16 or float64 Conv, so on the CPU such models are compared through exact
float32 copies of both graphs; on CUDA they run as they are.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import onnx

from ..errors import InputModelError, QarepError, UsageError
from ..numbers import finite_or_none
from .compare import OutputComparison, as_numbers, difference, floor_error, same_shape
from .inputs import InputPlan, InputSet, check_same_specs, input_plan
from .models import Prepared, prepare_candidate, prepare_original
from .noise import DEFAULT_RTOL, EPS, FACTOR
from .pairing import pair_outputs
from .providers import ProviderChoice, select_provider
from .reach import executed_nodes, needs_profile, unreached_folds
from .sessions import ModelFile, Workspace, open_session, release_memory, run_session


@dataclass(frozen=True)
class ValidationResult:
    outputs: tuple[OutputComparison, ...]
    provider: str  # "cpu", "cuda" or "tensorrt"
    provider_note: str  # one line: which provider and why
    rtol: float | None  # explicit rtol, or None when calibrated
    atol: float
    tolerance: str = "calibrated"  # "calibrated", "explicit" or "fixed" (floor not measurable)
    factor: float = FACTOR
    samples: tuple[str, ...] = ()  # the input sets, described
    unproven: tuple[str, ...] = ()  # what the inputs did not exercise, in words
    fixed_rtol: float | None = None  # the rtol used when the tolerance is "fixed"
    notes: tuple[str, ...] = ()  # what people should know that does not change the verdict

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs) and not self.unproven

    @property
    def status(self) -> str:
        if not all(o.passed for o in self.outputs):
            return "failed"
        return "inconclusive" if self.unproven else "passed"

    @property
    def worst(self) -> OutputComparison:
        return max(self.outputs, key=lambda o: o.badness)

    def summary(self) -> str:
        """One line saying why the verdict is not a pass (empty when it is)."""
        if self.status == "failed":
            worst = self.worst
            noise = f" ({_times(worst.noise_multiple)} the model's own float noise)" if worst.noise_multiple is not None else ""
            return (
                f"validation failed on {self.provider}: output '{worst.name}' differs by max|a-b| = "
                f"{worst.max_abs_error:.3g}{noise}, over the tolerance {worst.tolerance:.3g}"
            )
        if self.status == "inconclusive":
            return (
                f"validation on {self.provider} proves nothing about the fold: {self.unproven[0]}"
                + (f" (and {len(self.unproven) - 1} more)" if len(self.unproven) > 1 else "")
                + "; give inputs that reach it, or more random samples"
            )
        return ""

    def to_dict(self) -> dict:
        """The JSON-ready form (strict JSON: a non-finite figure is null)."""
        return {
            "status": self.status,
            "passed": self.passed,
            "provider": self.provider,
            "tolerance": self.tolerance,
            "factor": self.factor,
            "rtol": self.rtol if self.rtol is not None else self.fixed_rtol,
            "atol": self.atol,
            "samples": list(self.samples),
            "unproven": list(self.unproven),
            "notes": list(self.notes),
            "outputs": [_output_dict(o) for o in self.outputs],
        }


def _output_dict(o: OutputComparison) -> dict:
    return {
        "name": o.name,
        "max_abs_error": finite_or_none(o.max_abs_error),
        "relative_error": finite_or_none(o.relative_error),
        "max_abs_reference": finite_or_none(o.max_abs_reference),
        "noise_floor": finite_or_none(o.noise_floor),
        "noise_multiple": finite_or_none(o.noise_multiple),
        "tolerance": finite_or_none(o.tolerance),
        "passed": o.passed,
        "empty": o.empty,
        "sample": o.sample,
        "compared": "equality" if o.by_equality else "numbers",
    }


def _times(x: float | None) -> str:
    if x is None:
        return "?"
    return "inf x" if not np.isfinite(x) else f"{x:.2g}x"


Model = Any  # onnx.ModelProto | str | os.PathLike | onnx_graphsurgeon.Graph | ONNXProgram


def validate(
    original: Model,
    candidate: Model,
    *,
    provider: str = "auto",
    seed: int = 0,
    samples: int = 1,
    inputs: Sequence[str | os.PathLike | InputSet] | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    output_map: dict[str, str] | None = None,
) -> ValidationResult:
    """Compare every output of ``candidate`` against ``original`` (paths, protos, graphsurgeon graphs, ONNXPrograms).

    ``inputs``: input files (``.npz`` keyed by input name, ``.npy`` for one input) or
    :class:`~qarep_onnx.runtime.inputs.InputSet`; otherwise ``samples`` seeded random sets.  ``rtol``
    (with ``atol``) replaces the calibrated tolerance.  Outputs pair by name, else by position when
    their count, types and ranks agree; ``output_map`` (original name -> candidate name) pairs the
    rest.  ``provider``: auto, cpu, cuda, tensorrt.
    """
    return _validate(original, candidate, "the candidate", InputModelError, (), provider=provider, seed=seed,
                     samples=samples, inputs=inputs, rtol=rtol, atol=atol, input_shapes=input_shapes, output_map=output_map)


def validate_fold(original: Prepared, folded: onnx.ModelProto, folds: Sequence, workspace: Workspace,
                  **options) -> ValidationResult:
    """:func:`validate` of the fold's own output: onnxruntime failing on it is the tool's error, not the
    user's, and ``folds`` (the report's) let the check prove that the inputs reached every fold.
    ``original`` is what :func:`~.models.prepare_original` made of it in ``workspace`` before the fold."""
    return _validate(original, folded, "the folded model", QarepError, tuple(folds), workspace=workspace, **options)


@dataclass
class _Plan:
    """What one validation compares, and how."""

    choice: ProviderChoice
    inputs: InputPlan
    pairs: dict[str, str]  # original output -> candidate output
    mode: str  # "calibrated", "explicit" or "fixed"
    rtol: float | None
    atol: float
    fixed_rtol: float
    eps: float
    widen: bool
    notes: list[str] = field(default_factory=list)


def _validate(original, candidate, label, error, folds, *, provider="auto", seed=0, samples=1, inputs=None, rtol=None,
              atol=0.0, input_shapes=None, output_map=None, workspace: Workspace | None = None) -> ValidationResult:
    _check_arguments(samples, rtol, atol)
    choice = select_provider(provider)
    with contextlib.nullcontext(workspace) if workspace is not None else Workspace() as ws:
        first = original if isinstance(original, Prepared) else prepare_original(original, ws, choice, rtol is None, seed)
        second = prepare_candidate(candidate, ws, first.widen, label, error)
        check_same_specs(first.inputs, second.inputs, ("the original", label))
        pairs, pairing_note = pair_outputs(first.outputs, second.outputs, output_map, label)
        plan = _plan(first, choice, input_plan(first.inputs, inputs, samples, seed, input_shapes), pairs, rtol, atol)
        plan.notes += [pairing_note] if pairing_note else []
        return _run(plan, first, second, ws, folds)


def _plan(first: Prepared, choice, inputs: InputPlan, pairs, rtol, atol) -> _Plan:
    float_type = first.float_type
    session_type = onnx.TensorProto.FLOAT if first.widen else float_type
    eps = max(EPS.get(float_type, EPS[onnx.TensorProto.FLOAT]), EPS.get(session_type, EPS[onnx.TensorProto.FLOAT]))
    mode = "explicit" if rtol is not None else "calibrated"
    return _Plan(choice, inputs, pairs, mode, rtol, atol, DEFAULT_RTOL.get(float_type, 1e-5), eps, first.widen)


def _run(plan: _Plan, first: Prepared, second: Prepared, ws: Workspace, folds: Sequence) -> ValidationResult:
    names = list(plan.pairs)
    _reference_phase(first.file, plan, names, ws)
    release_memory()
    floors: list[dict[str, list[float]]] = [{} for _ in range(len(plan.inputs))]
    if plan.mode == "calibrated":
        measured = _floor_phase(first.file, True, plan, names, ws, floors)
        release_memory()
        if first.perturbed is not None:
            measured |= _floor_phase(first.perturbed, False, plan, names, ws, floors)
            release_memory()
        if not measured:
            plan.mode = "fixed"
    worst, executed = _candidate_phase(second.file, plan, floors, ws, needs_profile(folds))
    release_memory()
    return _verdict(plan, [worst[n] for n in names], folds, executed)


def _verdict(plan: _Plan, outputs: list[OutputComparison], folds: Sequence, executed: set[str]) -> ValidationResult:
    notes, unproven = list(plan.notes), []
    empty = [o.name for o in outputs if o.empty]
    notes += [f"output '{name}' is empty for every input set: it proves nothing" for name in empty]
    notes += [f"output '{o.name}' holds no numbers: compared for equality" for o in outputs if o.by_equality]
    if empty and len(empty) == len(outputs):
        unproven.append("every output is empty for these inputs")
    if needs_profile(folds) and all(o.passed for o in outputs):
        unproven += unreached_folds(folds, executed, plan.choice.name)
    return ValidationResult(
        tuple(outputs), plan.choice.name, plan.choice.note, plan.rtol, plan.atol, plan.mode, FACTOR, plan.inputs.descriptions,
        tuple(unproven), plan.fixed_rtol if plan.mode == "fixed" else None, tuple(notes),
    )


def _feeds(input_set: InputSet, widen: bool) -> dict[str, np.ndarray]:
    """The feeds, widened to float32 for the float32 copies of float16/float64 models (exact for float16;
    float64 values round as the widened model's weights do)."""
    if not widen:
        return input_set.feeds
    return {k: v.astype(np.float32) if v.dtype in (np.float16, np.float64) else v for k, v in input_set.feeds.items()}


def _reference_phase(file: ModelFile, plan: _Plan, names: list[str], ws: Workspace) -> None:
    """Run the original with every optimization off on each input set; its outputs wait on disk."""
    s = open_session(file, plan.choice)
    for k, input_set in enumerate(plan.inputs):
        outputs = dict(zip(names, run_session(s, names, _feeds(input_set, plan.widen), file.label, file.error)))
        ws.put(f"reference{k}", outputs)


def _floor_phase(file: ModelFile, optimize_graph: bool, plan: _Plan, names: list[str], ws: Workspace,
                 floors: list[dict[str, list[float]]]) -> bool:
    """How far one measure of noise moves each output on each input set; False when onnxruntime cannot run it."""
    try:
        s = open_session(file, plan.choice, optimize_graph)
    except QarepError:
        return False  # onnxruntime cannot build this measure: the other one (or the fixed rtol) decides
    for k, input_set in enumerate(plan.inputs):
        try:
            noisy = dict(zip(names, s.run(names, _feeds(input_set, plan.widen))))
        except Exception:  # a perturbed constant that shapes something: this run measured nothing
            continue
        reference = ws.get(f"reference{k}")
        for name in names:
            a, n = as_numbers(reference[name]), as_numbers(noisy[name])
            # A noise run whose output changed shape measured something else than noise: left out.
            if a is not None and n is not None and a.shape == n.shape and same_shape(reference[name], noisy[name]):
                floors[k].setdefault(name, []).append(floor_error(a, n))
    return True


def _candidate_phase(file: ModelFile, plan: _Plan, floors, ws: Workspace, profile: bool):
    """Run the candidate on each input set and keep, per output, the comparison closest to failing."""
    s = open_session(file, plan.choice, profile_prefix=str(ws.path / "profile") if profile else None)
    names = list(plan.pairs)
    theirs = [plan.pairs[n] for n in names]
    worst: dict[str, OutputComparison] = {}
    for k, input_set in enumerate(plan.inputs):
        actual = dict(zip(names, run_session(s, theirs, _feeds(input_set, plan.widen), file.label, file.error)))
        reference = ws.get(f"reference{k}")
        for name in names:
            comparison = _compare(plan, name, reference[name], actual[name], floors[k].get(name), input_set.description)
            if name not in worst or comparison.badness > worst[name].badness:
                worst[name] = comparison  # the worst set; an empty output only when it is empty everywhere
    executed = executed_nodes(s.end_profiling()) if profile else set()
    return worst, executed


def _compare(plan: _Plan, name: str, expected, actual, measured: list[float] | None, sample: str) -> OutputComparison:
    error, reference, size, by_equality = difference(expected, actual)
    scale = max(1.0, reference)
    floor = None
    if plan.mode == "explicit":
        tolerance = plan.atol + plan.rtol * scale
    elif plan.mode == "calibrated" and measured and not by_equality:
        # Never below one ulp of the output's own scale (not of 1: a small output gets a small floor).
        floor = max(max(measured), plan.eps * reference)
        tolerance = plan.atol + FACTOR * floor
    else:
        tolerance = plan.atol + plan.fixed_rtol * scale
    return OutputComparison(name, error, reference, tolerance, floor, size == 0, sample, by_equality)


def _check_arguments(samples: int, rtol: float | None, atol: float) -> None:
    if not isinstance(samples, int) or samples < 1:
        raise UsageError(f"samples must be a whole number >= 1, not {samples!r}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise UsageError(f"{name} must be a finite number >= 0, not {value!r}")
