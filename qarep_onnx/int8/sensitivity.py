"""Which layers cost the most in int8, and the smallest set to keep in float that reaches a target SQNR.

Ranking: each layer is quantized *alone* (input activation and weights, everything else float) and
the whole model measured on the held-out sets; the lower that end-to-end SQNR, the more the layer
costs.  Quantization noises of different layers are close to independent and their powers add, so
a layer's cost alone predicts what removing it from a fully quantized model gains.  Every
candidate reuses the activation ranges calibrated once (:mod:`.calibrate`); nothing is recalibrated.

Bound: at most ``max_layers`` layers are measured (default :data:`DEFAULT_MAX_LAYERS`).  With more
layers than that, the ones measured are those with the lowest *predicted* SQNR, the weight
(per-channel) and input-activation figures combined as independent noises; the others are listed
as not measured and never suggested.

Suggestion: starting from every layer quantized, layers are kept in float one at a time in ranking
order, re-measuring the model after each, until its worst output reaches the target.  Then each
layer of that set is tried back in int8, cheapest first, and stays in int8 if the target still
holds, so the set is minimal for the order measured (a greedy result, not a search of all subsets).
When even every measured layer in float misses the target, the suggestion is the best set seen on
the way (the shortest among equals) and ``reached`` is false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import onnx

from ..runtime.inputs import InputSet
from ..runtime.providers import ProviderChoice
from .calibrate import FloatRuns
from .layers import Layer
from .measure import measure
from .qdq import build_qdq
from .report import LayerSensitivity, LayerWeights, Measurement, Sensitivity
from .sqnr import combined_sqnr_db

DEFAULT_MAX_LAYERS = 32
DEFAULT_TARGET_SQNR_DB = 30.0  # noise power a thousandth of the signal's: about 3% RMS error on each output

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class Candidates:
    """Everything needed to build and measure a Q/DQ candidate, computed once."""

    prepared: onnx.ModelProto
    original: onnx.ModelProto
    layers: list[Layer]
    runs: FloatRuns
    holdout: list[InputSet]
    choice: ProviderChoice

    def measure(self, excluded: Sequence[str]) -> Measurement:
        """The model with every layer but ``excluded`` in int8."""
        skip = set(excluded)
        model = build_qdq(self.prepared, self.runs.ranges, [l.name for l in self.layers if l.name not in skip], self.original)
        return measure(model, self.holdout, self.runs, self.choice, tuple(excluded))

    def alone(self, layer: Layer) -> Measurement:
        model = build_qdq(self.prepared, self.runs.ranges, [layer.name], self.original)
        others = tuple(l.name for l in self.layers if l.name != layer.name)
        return measure(model, self.holdout, self.runs, self.choice, others)


def _predicted(layer: Layer, weights: dict[str, LayerWeights], runs: FloatRuns) -> float:
    w = weights[layer.name].sqnr_per_channel_db if layer.name in weights else float("inf")
    return combined_sqnr_db(w, runs.activation_sqnr_db.get(layer.activation, float("inf")))


def analyse(
    candidates: Candidates,
    weights: Sequence[LayerWeights],
    all_quantized: Measurement,
    target_sqnr_db: float = DEFAULT_TARGET_SQNR_DB,
    max_layers: int = DEFAULT_MAX_LAYERS,
    progress: Progress | None = None,
) -> tuple[Sensitivity, Measurement]:
    """The ranking and suggestion above, and the measurement with the suggested layers in float."""
    by_name = {w.name: w for w in weights}
    layers = sorted(candidates.layers, key=lambda l: _predicted(l, by_name, candidates.runs))
    chosen, skipped = layers[:max_layers], layers[max_layers:]
    ranking = []
    for k, layer in enumerate(chosen):
        alone = candidates.alone(layer)
        ranking.append(LayerSensitivity(
            layer.name, alone.sqnr_db, candidates.runs.activation_sqnr_db.get(layer.activation, float("inf")),
            by_name[layer.name].sqnr_per_channel_db if layer.name in by_name else float("inf"),
        ))
        if progress:
            progress("ranking layers", k + 1, len(chosen))
    ranking.sort(key=lambda r: r.sqnr_db)
    steps: list[Measurement] = []
    current, excluded = all_quantized, []
    for k, layer in enumerate(ranking):
        if current.sqnr_db >= target_sqnr_db:
            break
        excluded.append(layer.name)
        current = candidates.measure(excluded)
        steps.append(current)
        if progress:
            progress("keeping layers in float", k + 1, len(ranking))
    if progress and steps:
        progress("keeping layers in float", len(ranking), len(ranking))
    reached = current.sqnr_db >= target_sqnr_db
    if reached and len(excluded) > 1:
        tried = list(reversed(excluded))  # cheapest first: can it go back to int8?
        for k, name in enumerate(tried):
            trial = [n for n in excluded if n != name]
            measured = candidates.measure(trial)
            steps.append(measured)
            if measured.sqnr_db >= target_sqnr_db:
                excluded, current = trial, measured
            if progress:
                progress("trying layers back in int8", k + 1, len(tried))
    elif not reached:  # the target is out of reach: suggest the best set seen (the shortest among equals)
        current = max([all_quantized] + steps, key=lambda m: (m.sqnr_db, -len(m.excluded)))
        excluded = list(current.excluded)
    sensitivity = Sensitivity(
        target_sqnr_db=target_sqnr_db,
        ranking=tuple(ranking),
        not_measured=tuple(l.name for l in skipped),
        max_layers=max_layers,
        steps=tuple(steps),
        suggested=tuple(excluded),
        reached=reached,
    )
    return sensitivity, current
