"""Float32 runs: activation statistics from the calibration sets, FP32 references to measure against.

One session of the float model, with every tensor a Q/DQ pair may quantize added as an output, runs
once per calibration set and folds what it sees into :class:`~.calibration_methods.TensorStats`
(range, energy, a magnitude histogram for the percentile and entropy methods, per-channel maxima
for equalization); memory does not grow with the number of sets.  The model's own outputs on the
first :data:`SELECTION_SETS` calibration sets are kept as the references that *selection* measures
against (ranking layers, keeping some in float, equalizing); those on the held-out sets are the
references that *confirmation* and the final figures measure against.  So nothing is chosen on the
data it is judged on.  Sessions run with every graph optimization off.  Nothing here is recomputed
per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ..errors import QarepError
from ..runtime.inputs import InputSet
from ..runtime.providers import ProviderChoice
from ..runtime.sessions import session
from .calibration_methods import (
    DEFAULT_PERCENTILE,
    TensorStats,
    merged,
    predicted_sqnr_db,
    threshold,
)
from .placement import Placement

SELECTION_SETS = 4  # calibration sets that also serve selection (at most)


@dataclass
class FloatRuns:
    stats: dict[str, TensorStats]  # observed tensor -> statistics over every calibration set
    output_names: list[str]
    selection: list[dict[str, np.ndarray]]  # FP32 outputs on the selection sets (the first calibration sets)
    references: list[dict[str, np.ndarray]]  # FP32 outputs on the held-out sets


def run_sets(s, names: list[str], input_sets: list[InputSet], label: str):
    """``names`` of a session for each input set, one set at a time (a generator)."""
    for input_set in input_sets:
        try:
            values = s.run(names, input_set.feeds)
        except Exception as exc:  # onnxruntime raises its own types
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise QarepError(f"onnxruntime failed to run {label} on {input_set.description}: {detail}") from exc
        yield input_set, dict(zip(names, values))


def run_model(model: onnx.ModelProto, input_sets: list[InputSet], choice: ProviderChoice, label: str) -> list[dict[str, np.ndarray]]:
    """Every output of ``model`` for each input set (graph optimizations off)."""
    s = session(model, choice, optimize_graph=False)
    names = [o.name for o in s.get_outputs()]
    return [values for _, values in run_sets(s, names, input_sets, label)]


def _with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy whose graph also outputs ``tensors`` (those not already outputs or inputs)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output} | {i.name for i in copy.graph.input}
    typed = {v.name: v for v in copy.graph.value_info}
    for name in tensors:
        if name in present:
            continue
        info = typed.get(name) or helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        copy.graph.output.append(info)
        present.add(name)
    return copy


def float_runs(
    prepared: onnx.ModelProto,
    tensors: list[str],
    calibration: list[InputSet],
    holdout: list[InputSet],
    choice: ProviderChoice,
    histogram: bool = False,
    channel_axes: dict[str, int] | None = None,
    references: list[dict[str, np.ndarray]] | None = None,
) -> FloatRuns:
    """Statistics of ``tensors`` over ``calibration``; FP32 outputs on the selection and held-out sets.

    ``references``: the held-out outputs of the model this one computes the same function as (the
    model as given, for its folded form), used instead of running the held-out sets again.
    """
    output_names = [o.name for o in prepared.graph.output]
    channel_axes = channel_axes or {}
    s = session(_with_outputs(prepared, tensors + list(channel_axes)), choice, optimize_graph=False)
    observed = sorted(set(tensors) | set(channel_axes))
    stats = {t: TensorStats(histogram=histogram, channel_axis=channel_axes.get(t)) for t in observed}
    fetch = list(dict.fromkeys(output_names + [t for t in observed if t not in {i.name for i in prepared.graph.input}]))
    selection = []
    for k, (input_set, values) in enumerate(run_sets(s, fetch, calibration, "the float model")):
        for t in observed:
            stats[t].add(values[t] if t in values else input_set.feeds[t])
        if k < SELECTION_SETS:
            selection.append({name: values[name] for name in output_names})
    if references is None:
        references = [values for _, values in run_sets(s, output_names, holdout, "the float model")]
    return FloatRuns(stats, output_names, selection, references)


def limits(runs: FloatRuns, placement: Placement, method: str = "max", percentile: float = DEFAULT_PERCENTILE) -> dict[str, float]:
    """Scale key -> the clipping threshold ``method`` picks for it (the scale is threshold / 127)."""
    out = {}
    for key, members in placement.members().items():
        out[key] = threshold(merged([runs.stats[t] for t in members]), method, percentile)
    return out


def activation_sqnr(runs: FloatRuns, placement: Placement, thresholds: dict[str, float], tensors: list[str]) -> dict[str, float]:
    """Predicted SQNR (dB) of each of ``tensors`` under its scale, from the calibration statistics."""
    return {t: predicted_sqnr_db(runs.stats[t], thresholds[placement.key(t)]) for t in tensors if t in runs.stats}
