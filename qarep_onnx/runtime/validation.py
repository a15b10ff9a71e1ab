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
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import InputModelError, QarepError, UsageError
from ..fold.ops import WEIGHT_INPUTS
from ..graph.tensors import tensor_values
from ..graph.walk import NameAllocator, model_tensors, scopes
from .inputs import InputSet, check_same_inputs, load_input_sets, random_input_sets
from .providers import ProviderChoice, select_provider, session

# Fixed tolerances (rtol by the model's float type) for models whose noise floor cannot be measured.
DEFAULT_RTOL = {onnx.TensorProto.FLOAT: 1e-5, onnx.TensorProto.FLOAT16: 1e-2, onnx.TensorProto.DOUBLE: 1e-5}
# A correct fold stays within this many noise floors (measured: README, "How validation decides").
FACTOR = 8.0
# The smallest floor, relative to an output's scale: one ulp of the coarser of the weights' type and
# the arithmetic the sessions run in (float16 and float64 models run in float32 on the CPU).  A
# measured floor can come out lucky-small where few weights reach an output; a float16 weight rounded
# once by a fold is off by up to half a float16 ulp whatever the draw.
_EPS = {onnx.TensorProto.FLOAT: 2.0**-23, onnx.TensorProto.FLOAT16: 2.0**-10, onnx.TensorProto.DOUBLE: 2.0**-52}
_WIDE = (onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


@dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_error: float
    max_abs_reference: float
    tolerance: float  # the largest max_abs_error accepted
    noise_floor: float | None = None  # the original model's own float noise on this output (None: not measured)
    empty: bool = False  # the output had no elements for any input set: it proves nothing
    sample: str = ""  # the input set where the error was largest, relative to its tolerance

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_error <= self.tolerance)

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / max(1.0, self.max_abs_reference)

    @property
    def noise_multiple(self) -> float | None:
        """The error as a multiple of the model's own float noise."""
        if self.noise_floor is None:
            return None
        return self.max_abs_error / self.noise_floor if self.noise_floor > 0 else (0.0 if self.max_abs_error == 0 else np.inf)


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
                + "; give inputs that reach it with --inputs, or more --samples"
            )
        return ""


def _times(x: float | None) -> str:
    if x is None:
        return "?"
    return "inf x" if not np.isfinite(x) else f"{x:.2g}x"


def model_float_type(model: onnx.ModelProto) -> int:
    """The float element type the model computes in (that of its first float input or initializer)."""
    for value in list(model.graph.input) + list(model.graph.output):
        t = value.type.tensor_type.elem_type
        if t in DEFAULT_RTOL:
            return t
    for init in model.graph.initializer:
        if init.data_type in DEFAULT_RTOL:
            return init.data_type
    return onnx.TensorProto.FLOAT


def as_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """An exact float32 copy of a float16/float64 model (every float tensor and type widened)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)

    def convert_type(value_info) -> None:
        tt = value_info.type.tensor_type
        if tt.elem_type in _WIDE:
            tt.elem_type = onnx.TensorProto.FLOAT

    for t in model_tensors(copy):
        if t.data_type in _WIDE:
            t.CopyFrom(numpy_helper.from_array(tensor_values(t).astype(np.float32), t.name))
    for scope in scopes(copy):
        for v in scope.value_infos:
            convert_type(v)
        for node in scope.nodes:
            for attr in node.attribute:
                if attr.name == "to" and node.op_type == "Cast" and attr.i in _WIDE:
                    attr.i = onnx.TensorProto.FLOAT
    return copy


def _weight_names(nodes) -> set[str]:
    """Names read as weights by the nodes of one graph, Identity aliases followed back to their source."""
    names: set[str] = set()
    aliases = {}
    for node in nodes:
        slots = WEIGHT_INPUTS.get(node.op_type, ())  # weights only: never the sizes or scales of a Resize
        inputs = list(node.input) if slots is None else [node.input[i] for i in slots if i < len(node.input)]
        names.update(n for n in inputs if n)
        if node.op_type == "Identity" and node.input:
            aliases[node.output[0]] = node.input[0]
    for alias, source in reversed(list(aliases.items())):
        if alias in names:
            names.add(source)
    return names


def perturbed_by_one_ulp(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto | None:
    """A copy with every float weight moved one ulp up or down at random, or None if it has none."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rng = np.random.default_rng(seed)
    changed = False
    for scope in scopes(copy):
        weights = _weight_names(scope.nodes)
        tensors = [t for t in scope.initializers if t.name in weights]
        for node in scope.nodes:
            if node.op_type == "Constant" and node.output and node.output[0] in weights:
                tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
        for t in tensors:
            changed |= _move_one_ulp(t, rng)
    return copy if changed else None


def _move_one_ulp(t: onnx.TensorProto, rng: np.random.Generator) -> bool:
    if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        return False
    values = tensor_values(t)
    if not values.size:
        return False
    direction = np.where(rng.integers(0, 2, values.shape).astype(bool), np.inf, -np.inf).astype(values.dtype)
    with np.errstate(all="ignore"):
        moved = np.nextafter(values, direction)
    moved = np.where(np.isfinite(moved), moved, values)
    t.CopyFrom(numpy_helper.from_array(moved.astype(values.dtype), t.name))
    return True


def run(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize_graph: bool = False, provider: ProviderChoice | None = None
) -> dict[str, np.ndarray]:
    """Outputs of ``model`` (CPU unless told; graph optimizations off unless asked)."""
    s = session(model, provider or select_provider("cpu"), optimize_graph)
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, _run(s, names, feeds)))


def _run(s, names: list[str], feeds: dict[str, np.ndarray], label: str = "the model", error=QarepError) -> list:
    try:
        return s.run(names, feeds)
    except Exception as exc:  # onnxruntime raises its own types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"onnxruntime failed to run {label}: {detail}") from exc


def _labelled_session(model, choice, label: str, error):
    """A session without graph optimizations; a model onnxruntime rejects is named in the error."""
    try:
        return session(model, choice, optimize_graph=False)
    except QarepError as exc:
        raise error(str(exc).replace("the model", label, 1)) from exc


def _as_array(value) -> np.ndarray | None:
    """An output as one float64 array (a tensor sequence is concatenated), or None for maps."""
    if isinstance(value, list):
        if not all(isinstance(v, np.ndarray) for v in value):
            return None
        return np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in value]) if value else np.zeros(0)
    if isinstance(value, np.ndarray):
        return np.asarray(value, np.float64)
    return None


def _sequence_length(value) -> int | None:
    return len(value) if isinstance(value, list) else None


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
    eps = max(_EPS.get(float_type, _EPS[onnx.TensorProto.FLOAT]), _EPS.get(session_type, _EPS[onnx.TensorProto.FLOAT]))

    # A model onnxruntime cannot run is bad input; so is our own output, but that one is our bug.
    candidate_error = QarepError if candidate_label == "the folded model" else InputModelError
    reference = _labelled_session(original, choice, "the original model", InputModelError)
    tested = _labelled_session(candidate, choice, candidate_label, candidate_error)
    floors = []
    if calibrate:
        floors.append(_optional_session(original, choice, optimize_graph=True))
        if perturbed is not None:
            floors.append(_optional_session(perturbed, choice, optimize_graph=False))
        floors = [s for s in floors if s is not None]

    names = [o.name for o in reference.get_outputs()]
    worst: dict[str, OutputComparison] = {}
    unproven: list[str] = []
    candidate_outputs = []  # per input set: what the candidate computed, for the reach check
    mode = "explicit" if not calibrate else ("calibrated" if floors else "fixed")
    fixed_rtol = DEFAULT_RTOL.get(float_type, 1e-5)
    for input_set in input_sets:
        expected = dict(zip(names, _run(reference, names, input_set.feeds, "the original model", InputModelError)))
        actual = dict(zip(names, _run(tested, names, input_set.feeds, candidate_label, candidate_error)))
        noise = _noise_runs(floors, names, input_set.feeds)
        candidate_outputs.append(actual)
        for name in names:
            comparison = _compare(name, expected[name], actual[name], [n[name] for n in noise], mode, rtol, fixed_rtol,
                                  atol, eps, input_set.description)
            if name not in worst or _badness(comparison) > _badness(worst[name]):
                worst[name] = comparison  # the worst set; an empty output only when it is empty everywhere
    outputs = tuple(worst[n] for n in names)
    empty = [o.name for o in outputs if o.empty]
    notes = [f"output '{name}' is empty for every input set: it proves nothing" for name in empty]
    if empty and len(empty) == len(outputs):
        unproven.append("every output is empty for these inputs")
    if folds and all(o.passed for o in outputs):
        tolerances = {o.name: o.tolerance for o in outputs}
        unproven += _unreached_folds(candidate, folds, choice, input_sets, candidate_outputs, tolerances)
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


def _optional_session(model: onnx.ModelProto, choice: ProviderChoice, optimize_graph: bool):
    """A session for measuring the noise floor; None when onnxruntime cannot build it (then that measure is skipped)."""
    try:
        return session(model, choice, optimize_graph)
    except QarepError:
        return None


def _badness(o: OutputComparison) -> float:
    if o.empty:
        return -1.0
    return o.max_abs_error / o.tolerance if o.tolerance else (np.inf if o.max_abs_error else 0.0)


def _compare(name, expected, actual, noisy, mode, rtol, fixed_rtol, atol, eps, sample) -> OutputComparison:
    a, b = _as_array(expected), _as_array(actual)
    if a is None or b is None:
        raise UsageError(f"output '{name}' is not a tensor or a sequence of tensors; it cannot be compared")
    if _sequence_length(expected) != _sequence_length(actual) or a.shape != b.shape:
        error, reference = np.inf, _max_abs(a)
    else:
        error, reference = _max_error(a, b)
    scale = max(1.0, reference)
    floor = None
    if mode == "explicit":
        tolerance = atol + rtol * scale
    elif mode == "fixed":
        tolerance = atol + fixed_rtol * scale
    else:
        # A noise run whose output changed shape measured something else than noise: left out.
        measured = [_max_error(a, c)[0] for c in map(_as_array, noisy) if c is not None and c.shape == a.shape]
        if measured:
            floor = max(max(measured), eps * scale)
            tolerance = atol + FACTOR * floor
        else:
            tolerance = atol + fixed_rtol * scale
    return OutputComparison(name, error, reference, tolerance, floor, a.size == 0, sample)


def _max_abs(a: np.ndarray) -> float:
    finite = a[np.isfinite(a)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def _max_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """max|a - b| and max|a| over finite values; equal infinities and NaN against NaN agree,
    any other non-finite mismatch is an infinite error."""
    if not a.size:
        return 0.0, 0.0
    with np.errstate(all="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        diff = np.where(same, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)
        return float(diff.max()), _max_abs(a)


# -- did the inputs reach the folds? ------------------------------------------------------------------


def _unreached_folds(candidate, folds, choice, input_sets, computed, tolerances) -> list[str]:
    """Perturb each graph's folded nodes in a probe copy; a group no output notices was never exercised."""
    by_graph: dict[str, list[str]] = defaultdict(list)
    for fold in folds:
        by_graph[fold.graph].append(fold.node)
    messages = []
    float_type = model_float_type(candidate)
    for graph, node_names in by_graph.items():
        probe = probed_copy(candidate, set(node_names), float_type)
        s = session(probe, choice, optimize_graph=False)
        names = [o.name for o in s.get_outputs() if o.name in tolerances]
        reached = False
        for input_set, expected in zip(input_sets, computed):
            moved = dict(zip(names, _run(s, names, input_set.feeds)))
            for name in names:
                a, b = _as_array(expected[name]), _as_array(moved[name])
                if a is None or b is None or a.shape != b.shape:
                    reached = True  # a different structure is a visible change
                elif a.size and _max_error(a, b)[0] > tolerances[name]:
                    reached = True
            if reached:
                break
        if not reached:
            where = f" in {graph}" if graph else ""
            messages.append(f"{len(node_names)} folded node(s){where} changed no output when perturbed: "
                            "the inputs never reached them")
    return messages


def probed_copy(model: onnx.ModelProto, node_names: set[str], float_type: int) -> onnx.ModelProto:
    """A copy where the output ``y`` of each named node becomes ``1.5 * y + 1``: a change any use of it shows."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(float_type)
    names = NameAllocator.for_model(copy)
    for scope in scopes(copy):
        rebuilt = []
        for node in scope.nodes:
            rebuilt.append(node)
            if node.name in node_names and node.output:
                final = node.output[0]
                raw = node.output[0] = names.fresh(f"{final}__probe")
                scale, offset, scaled = names.fresh("probe_scale"), names.fresh("probe_offset"), names.fresh(f"{final}__probed")
                rebuilt += [
                    helper.make_node("Constant", [], [scale], value=numpy_helper.from_array(np.array(1.5, dtype))),
                    helper.make_node("Constant", [], [offset], value=numpy_helper.from_array(np.array(1.0, dtype))),
                    helper.make_node("Mul", [raw, scale], [scaled]),
                    helper.make_node("Add", [scaled, offset], [final]),
                ]
        if len(rebuilt) != len(scope.nodes):
            del scope.nodes[:]
            scope.nodes.extend(rebuilt)
    return copy
