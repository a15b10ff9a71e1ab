"""Which layers cost the most in int8, which to keep in float for a target SQNR, selected and then confirmed.

Three sets of data, never mixed (:mod:`.calibrate`): every calibration set calibrates the scales;
the first of them (*selection sets*, the first of which is the *ranking set*) choose the layers
to keep in float; the held-out sets only confirm and measure.

Ranking: each layer is quantized *alone* (input activation and weights, everything else float) and
the whole model measured on the ranking sets; the lower that SQNR, the more the layer costs.  The
noises of different layers are close to independent and their powers add, so a layer's relative
noise alone, ``10^(-SQNR/10)``, predicts what keeping it in float gains in a fully quantized model.
At most ``max_layers`` layers are measured (default :data:`DEFAULT_MAX_LAYERS`): those with the
lowest SQNR *predicted* from their weight (per channel) and input-activation figures; the others
are listed as not measured and never suggested.

Selection (on the selection sets): the smallest prefix of the ranking that reaches the target,
then each layer of it tried back in int8, cheapest first, kept in int8 when the target still
holds (a greedy result, minimal for the order measured).  The exhaustive search
(``exhaustive=True``) measures every prefix from one layer up and tries every layer back.  Fast
mode does the same up to :data:`LINEAR_SCAN` layers in float (so the two agree wherever the answer
is that small); beyond, it measures the prefix the additive noise model predicts, bisects between
it and the whole ranking when it falls short, steps down one layer at a time while the target
holds, and tries a layer back only when the model predicts the target could still hold (within
:data:`BACK_MARGIN_DB`).  When no prefix reaches the target, the best set seen (shortest among
equals) is selected; fast mode sees the prefixes up to :data:`LINEAR_SCAN` layers, then 16, 32, ...
and the whole ranking.

Confirmation (on the held-out sets): the selected layers, most costly first, are kept in float one
prefix at a time (every prefix up to :data:`CURVE_FULL` layers, beyond that 0, 1, 2, 4, 8, ... and
all); the exclusions kept are the shortest prefix within :data:`CONFIRM_TOLERANCE_DB` of the best
held-out figure, and none when no prefix beats every layer in int8 by more than that.  So a set
chosen on calibration data whose gain does not hold on unseen data is not suggested, and the report
shows both figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..runtime.inputs import InputSet
from .calibrate import FloatRuns
from .layers import Layer
from .measure import compare_outputs
from .report import CurvePoint, LayerSensitivity, LayerWeights, Measurement, Sensitivity
from .sqnr import combined_sqnr_db
from .switch import SwitchModel

DEFAULT_MAX_LAYERS = 32
DEFAULT_TARGET_SQNR_DB = 30.0  # noise power a thousandth of the signal's: about 3% RMS error on each output
RANKING_SETS = 1
LINEAR_SCAN = 8  # fast mode searches as the exhaustive one does up to this many layers in float
BACK_MARGIN_DB = 1.0
CURVE_FULL = 8
CONFIRM_TOLERANCE_DB = 0.1

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class Candidates:
    """Measures candidates (a set of layers kept in float) through one switch session; remembers every result."""

    engine: SwitchModel
    layers: list[Layer]
    runs: FloatRuns
    selection: list[InputSet]  # the first calibration sets (as many as runs.selection)
    holdout: list[InputSet]
    cache: dict = field(default_factory=dict)
    count: int = 0

    def _sets(self, on: str) -> tuple[list[InputSet], list]:
        if on == "holdout":
            return self.holdout, self.runs.references
        if on == "ranking":
            return self.selection[:RANKING_SETS], self.runs.selection[:RANKING_SETS]
        return self.selection, self.runs.selection

    def measure(self, excluded: Sequence[str], on: str = "holdout") -> Measurement:
        """Every layer but ``excluded`` in int8, measured on the held-out, selection or ranking sets."""
        key = (frozenset(excluded), on)
        if key not in self.cache:
            quantized = frozenset(l.name for l in self.layers) - key[0]
            sets, references = self._sets(on)
            outputs = self.engine.run(quantized, sets)
            self.cache[key] = Measurement(compare_outputs(self.runs.output_names, references, outputs), tuple(excluded))
            self.count += 1
        return self.cache[key]

    def alone(self, layer: Layer) -> Measurement:
        """Only ``layer`` in int8, on the ranking sets."""
        return self.measure([l.name for l in self.layers if l.name != layer.name], "ranking")


def _relative_noise(sqnr_db: float) -> float:
    return 0.0 if sqnr_db == math.inf else 10.0 ** (-sqnr_db / 10.0)


def _db(noise: float) -> float:
    return math.inf if noise <= 0 else -10.0 * math.log10(noise)


def _predicted(layer: Layer, weights: dict[str, LayerWeights], activation: dict[str, float]) -> float:
    w = weights[layer.name].sqnr_per_channel_db if layer.name in weights else math.inf
    return combined_sqnr_db(w, activation.get(layer.activation, math.inf))


@dataclass
class _Search:
    """The selection on the selection sets: the measured steps, the noise model, the target."""

    c: Candidates
    ranking: list[LayerSensitivity]
    target: float
    exhaustive: bool
    steps: list[Measurement] = field(default_factory=list)

    def measure(self, excluded: Sequence[str]) -> Measurement:
        m = self.c.measure(excluded, "selection")
        if not any(s is m for s in self.steps):
            self.steps.append(m)
        return m

    def predicted(self, base: Measurement, removed: Sequence[str], added: Sequence[str] = ()) -> float:
        noise = {r.name: _relative_noise(r.sqnr_db) for r in self.ranking}
        total = _relative_noise(base.sqnr_db) - sum(noise[n] for n in removed) + sum(noise[n] for n in added)
        return _db(total)

    def prefix(self, all_quantized: Measurement, progress: Progress | None) -> Measurement:
        """The measurement of the smallest prefix of the ranking that reaches the target (or the best seen)."""
        names = [r.name for r in self.ranking]
        n = len(names)
        reached = lambda count: self.measure(names[:count]).sqnr_db >= self.target  # noqa: E731
        linear = n if self.exhaustive else min(n, LINEAR_SCAN)
        for k in range(1, linear + 1):
            if progress:
                progress("keeping layers in float", k, linear)
            if reached(k):
                return self.measure(names[:k])
        if linear == n:
            return self._best(all_quantized)
        k = next((k for k in range(linear + 1, n + 1) if self.predicted(all_quantized, names[:k]) >= self.target), n)
        if not reached(k):
            if k == n or not reached(n):  # out of reach: the best of a few more prefixes
                for count in _doubling(n):
                    if count > linear:
                        self.measure(names[:count])
                return self._best(all_quantized)
            low, high = k, n  # names[:low] misses, names[:high] reaches
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if reached(middle) else (middle, high)
            k = high
        while k - 1 > linear and reached(k - 1):
            k -= 1
        return self.measure(names[:k])

    def _best(self, all_quantized: Measurement) -> Measurement:
        return max([all_quantized] + self.steps, key=lambda m: (m.sqnr_db, -len(m.excluded)))

    def back(self, current: Measurement, progress: Progress | None) -> Measurement:
        """Each layer of the set tried back in int8, cheapest first; kept there when the target still holds."""
        tried = list(reversed(current.excluded))
        for k, name in enumerate(tried):
            trial = [n for n in current.excluded if n != name]
            small = len(tried) <= LINEAR_SCAN
            if self.exhaustive or small or self.predicted(current, [], [name]) >= self.target - BACK_MARGIN_DB:
                measured = self.measure(trial)
                if measured.sqnr_db >= self.target:
                    current = measured
            if progress:
                progress("trying layers back in int8", k + 1, len(tried))
        return current


def _rank(c: Candidates, weights, activation, max_layers: int, progress: Progress | None):
    by_name = {w.name: w for w in weights}
    layers = sorted(c.layers, key=lambda l: _predicted(l, by_name, activation))
    chosen, skipped = layers[:max_layers], layers[max_layers:]
    ranking = []
    for k, layer in enumerate(chosen):
        alone = c.alone(layer)
        ranking.append(LayerSensitivity(
            layer.name, alone.sqnr_db, activation.get(layer.activation, math.inf),
            by_name[layer.name].sqnr_per_channel_db if layer.name in by_name else math.inf,
        ))
        if progress:
            progress("ranking layers", k + 1, len(chosen))
    ranking.sort(key=lambda r: r.sqnr_db)
    return ranking, skipped


def _doubling(n: int) -> list[int]:
    """1, 2, 4, ... below ``n``, and ``n``."""
    counts, step = [], 1
    while step < n:
        counts.append(step)
        step *= 2
    return counts + [n]


def _curve_counts(k: int, exhaustive: bool) -> list[int]:
    if exhaustive or k <= CURVE_FULL:
        return list(range(k + 1))
    return [0] + _doubling(k)


def _confirm(c: Candidates, selected: list[str], exhaustive: bool, progress: Progress | None) -> tuple[list[CurvePoint], tuple[str, ...]]:
    counts = _curve_counts(len(selected), exhaustive)
    curve = []
    for k, count in enumerate(counts):
        chosen = tuple(selected[:count])
        seen = (frozenset(chosen), "selection") in c.cache
        selection = c.measure(chosen, "selection").sqnr_db if exhaustive or seen else None
        curve.append(CurvePoint(count, chosen, selection, c.measure(chosen, "holdout").sqnr_db))
        if progress:
            progress("confirming on held-out sets", k + 1, len(counts))
    best = max(p.holdout_sqnr_db for p in curve)
    if best <= curve[0].holdout_sqnr_db + CONFIRM_TOLERANCE_DB:
        return curve, ()
    confirmed = next(p for p in curve if p.holdout_sqnr_db >= best - CONFIRM_TOLERANCE_DB)
    return curve, confirmed.excluded


def analyse(
    candidates: Candidates,
    weights: Sequence[LayerWeights],
    activation: dict[str, float],
    target_sqnr_db: float = DEFAULT_TARGET_SQNR_DB,
    max_layers: int = DEFAULT_MAX_LAYERS,
    progress: Progress | None = None,
    exhaustive: bool = False,
    rank_always: bool = True,
) -> tuple[Sensitivity, Measurement]:
    """The ranking, selection and confirmation above; and the held-out measurement with the confirmed layers in float.

    ``rank_always``: rank the layers even when every layer in int8 already reaches the target on the
    selection sets (the report shows the ranking); ``quantize`` only needs it when it must choose.
    """
    all_quantized = candidates.measure((), "selection")
    if rank_always or all_quantized.sqnr_db < target_sqnr_db:
        ranking, skipped = _rank(candidates, weights, activation, max_layers, progress)
    else:
        ranking, skipped = [], list(candidates.layers)
    search = _Search(candidates, ranking, target_sqnr_db, exhaustive)
    if all_quantized.sqnr_db >= target_sqnr_db:
        selected = all_quantized
    else:
        selected = search.prefix(all_quantized, progress)
        if selected.sqnr_db >= target_sqnr_db and len(selected.excluded) > 1:
            selected = search.back(selected, progress)
    order = {r.name: k for k, r in enumerate(ranking)}
    chosen = sorted(selected.excluded, key=order.__getitem__)
    curve, confirmed = _confirm(candidates, chosen, exhaustive, progress) if chosen else ([], ())
    final = candidates.measure(confirmed, "holdout")
    sensitivity = Sensitivity(
        target_sqnr_db=target_sqnr_db, ranking=tuple(ranking), not_measured=tuple(l.name for l in skipped),
        max_layers=max_layers, ranking_sets=tuple(s.description for s in candidates.selection[:RANKING_SETS]),
        steps=tuple(search.steps), selected=tuple(chosen), reached_selection=selected.sqnr_db >= target_sqnr_db,
        curve=tuple(curve), suggested=tuple(confirmed), reached=final.sqnr_db >= target_sqnr_db,
        exhaustive=exhaustive, measurements=candidates.count,
    )
    return sensitivity, final
