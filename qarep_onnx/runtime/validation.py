"""Check on onnxruntime that a candidate model computes what the original computed, and say how sure that is.

Both models run on the same inputs with every graph optimization disabled (otherwise onnxruntime
folds Conv+BN inside the reference too and hides fold errors).  How far apart two correct models
may be depends on the network: a deep network's float32 noise is far above a single block's.  So
the tolerance is calibrated to the *original* model on the same inputs and provider: its noise
floor per output is the larger of

* how far onnxruntime's own graph optimizations (ORT_ENABLE_ALL against ORT_DISABLE_ALL) move it,
* how far a random one-ulp change of every weight moves it (the rounding a fold commits once);

and an output passes when ``max|a - b| <= atol + FACTOR * floor`` (:data:`FACTOR`; README gives the
measurements behind it).  Explicit ``rtol`` replaces the calibration by ``atol + rtol * max(1, max|a|)``;
a model whose floor cannot be measured falls back to :data:`DEFAULT_RTOL`.

A verdict must have measured something.  An output that is empty for the inputs used proves
nothing, and when the caller names the folds (``optimize --validate``), each graph's folded nodes
are perturbed in a probe copy: if no output moves beyond its tolerance, the inputs never reached
them (a Loop with zero iterations, an If branch not taken) and the result is *inconclusive*.

onnxruntime's CPU provider has no float16 or float64 Conv, so on the CPU such models are compared
through exact float32 copies of both graphs; on CUDA they run as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx

from ..errors import InputModelError, QarepError, UsageError
from ..numbers import finite_or_none
from .compare import OutputComparison, badness, compare_output
from .inputs import InputSet, check_same_inputs, load_input_sets, random_input_sets
from .noise import (
    DEFAULT_RTOL,
    EPS,
    FACTOR,
    as_float32,
    model_float_type,
    perturbed_by_one_ulp,
)
from .providers import select_provider
from .reach import unreached_folds
from .sessions import labelled_session, optional_session, run_session


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
        return max(self.outputs, key=lambda o: o.max_abs_error / o.tolerance if o.tolerance else (np.inf if o.max_abs_error else 0))

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
            "outputs": [
                {
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
                }
                for o in self.outputs
            ],
        }


def _times(x: float | None) -> str:
    if x is None:
        return "?"
    return "inf x" if not np.isfinite(x) else f"{x:.2g}x"


def validate(
    original: onnx.ModelProto | str | os.PathLike,
    candidate: onnx.ModelProto | str | os.PathLike,
    *,
    provider: str = "auto",
    seed: int = 0,
    samples: int = 1,
    inputs: Sequence[str | os.PathLike | InputSet] | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    folds: Sequence = (),
    candidate_label: str = "the candidate",
) -> ValidationResult:
    """Compare every output of ``candidate`` against ``original`` (models or paths).

    ``inputs``: input files (``.npz`` keyed by input name, ``.npy`` for one input) or
    :class:`~qarep_onnx.inputs.InputSet`; otherwise ``samples`` seeded random sets.  ``rtol``
    (with ``atol``) replaces the calibrated tolerance.  ``folds`` (the report's folds) lets the
    check prove that the inputs reached every folded graph.  ``provider``: auto, cpu, cuda, tensorrt.
    """
    from ..io import load_model

    original = original if isinstance(original, onnx.ModelProto) else load_model(original)
    candidate = candidate if isinstance(candidate, onnx.ModelProto) else load_model(candidate)
    _check_arguments(samples, rtol, atol)
    choice = select_provider(provider)
    check_same_inputs(original, candidate, ("the original", "the candidate"))
    expected_outputs = [o.name for o in original.graph.output]
    missing = [n for n in expected_outputs if n not in {o.name for o in candidate.graph.output}]
    if missing:
        raise UsageError(f"the candidate has no output '{missing[0]}' (the original's outputs: {', '.join(expected_outputs)})")

    input_sets = _input_sets(original, inputs, samples, seed, input_shapes)
    float_type = model_float_type(original)
    widen = float_type != onnx.TensorProto.FLOAT and choice.name == "cpu"
    calibrate = rtol is None
    perturbed = None
    if calibrate:
        # One ulp of what the comparison really sees: float16 weights move by a float16 ulp, float64
        # weights (compared in float32 on the CPU) by a float32 ulp.
        if widen and float_type == onnx.TensorProto.FLOAT16:
            perturbed = perturbed_by_one_ulp(original, seed)
            perturbed = as_float32(perturbed) if perturbed is not None else None
        else:
            perturbed = perturbed_by_one_ulp(as_float32(original) if widen else original, seed)
    if widen:
        original, candidate = as_float32(original), as_float32(candidate)
        input_sets = [_widened(s) for s in input_sets]
    session_type = onnx.TensorProto.FLOAT if widen else float_type
    eps = max(EPS.get(float_type, EPS[onnx.TensorProto.FLOAT]), EPS.get(session_type, EPS[onnx.TensorProto.FLOAT]))

    # A model onnxruntime cannot run is bad input; so is our own output, but that one is our bug.
    candidate_error = QarepError if candidate_label == "the folded model" else InputModelError
    reference = labelled_session(original, choice, "the original model", InputModelError)
    tested = labelled_session(candidate, choice, candidate_label, candidate_error)
    floors = []
    if calibrate:
        floors.append(optional_session(original, choice, optimize_graph=True))
        if perturbed is not None:
            floors.append(optional_session(perturbed, choice, optimize_graph=False))
        floors = [s for s in floors if s is not None]

    names = [o.name for o in reference.get_outputs()]
    worst: dict[str, OutputComparison] = {}
    unproven: list[str] = []
    candidate_outputs = []  # per input set: what the candidate computed, for the reach check
    mode = "explicit" if not calibrate else ("calibrated" if floors else "fixed")
    fixed_rtol = DEFAULT_RTOL.get(float_type, 1e-5)
    for input_set in input_sets:
        expected = dict(zip(names, run_session(reference, names, input_set.feeds, "the original model", InputModelError)))
        actual = dict(zip(names, run_session(tested, names, input_set.feeds, candidate_label, candidate_error)))
        noise = _noise_runs(floors, names, input_set.feeds)
        candidate_outputs.append(actual)
        for name in names:
            comparison = compare_output(name, expected[name], actual[name], [n[name] for n in noise], mode, rtol, fixed_rtol,
                                  atol, eps, input_set.description)
            if name not in worst or badness(comparison) > badness(worst[name]):
                worst[name] = comparison  # the worst set; an empty output only when it is empty everywhere
    outputs = tuple(worst[n] for n in names)
    empty = [o.name for o in outputs if o.empty]
    notes = [f"output '{name}' is empty for every input set: it proves nothing" for name in empty]
    if empty and len(empty) == len(outputs):
        unproven.append("every output is empty for these inputs")
    if folds and all(o.passed for o in outputs):
        tolerances = {o.name: o.tolerance for o in outputs}
        unproven += unreached_folds(candidate, folds, choice, input_sets, candidate_outputs, tolerances)
    return ValidationResult(
        outputs, choice.name, choice.note, rtol, atol, mode, FACTOR,
        tuple(s.description for s in input_sets), tuple(unproven), fixed_rtol if mode == "fixed" else None, tuple(notes),
    )


def _check_arguments(samples: int, rtol: float | None, atol: float) -> None:
    if not isinstance(samples, int) or samples < 1:
        raise UsageError(f"samples must be a whole number >= 1, not {samples!r}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise UsageError(f"{name} must be a finite number >= 0, not {value!r}")


def _input_sets(model, inputs, samples, seed, input_shapes) -> list[InputSet]:
    if not inputs:
        return random_input_sets(model, samples, seed, input_shapes)
    given = [i for i in inputs if isinstance(i, InputSet)]
    paths = [i for i in inputs if not isinstance(i, InputSet)]
    return given + load_input_sets(model, paths)


def _widened(input_set: InputSet) -> InputSet:
    """The same inputs for float32 copies of float16/float64 models (exact: float16 widens exactly;
    float64 values round as the widened model's weights do)."""
    feeds = {k: v.astype(np.float32) if v.dtype in (np.float16, np.float64) else v for k, v in input_set.feeds.items()}
    return InputSet(feeds, input_set.description)


def _noise_runs(sessions, names: list[str], feeds) -> list[dict]:
    """Outputs of the noise-floor sessions; one that fails to run (a perturbed constant that shapes
    something) is left out."""
    runs = []
    for s in sessions:
        try:
            runs.append(dict(zip(names, s.run(names, feeds))))
        except Exception:  # onnxruntime's own error types
            continue
    return runs




