"""The INT8 reports as lines of text for people; the CLI prints them.  Pure functions from data to lines.

Bounded: a list shows at most :data:`SHOWN` names and counts the rest, unless ``show_all``
(``--all-layers``); ``--json`` and ``--html`` always hold everything.
"""

from __future__ import annotations

import math
from collections import Counter

from ..int8.report import (
    Equalization,
    Int8Report,
    LayerWeights,
    Measurement,
    ModelAnalysis,
    QuantizeReport,
    Sensitivity,
    Settings,
)
from ..int8.weights import SPREAD_LIMIT, SQNR_LIMIT_DB

SHOWN = 10  # names per list (weight rows, pairs, layers) without --all-layers
SHOWN_RANKING = 5
FORM = "Q/DQ int8 as TensorRT's explicit quantization takes it (zero points 0, weights per output channel, activations per tensor)"


def _db(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.1f}"


def _cosine(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.5f}"


def _provider(name: str) -> str:
    return {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT"}.get(name, name)


def _num(x: float) -> str:
    return f"{x:.3g}"


def names_text(names, show_all: bool = False) -> str:
    """At most :data:`SHOWN` names, the rest counted."""
    names = list(names)
    if show_all or len(names) <= SHOWN:
        return " ".join(names)
    return " ".join(names[:SHOWN]) + f" ... and {len(names) - SHOWN} more (--all-layers)"


def _measurement(m: Measurement) -> str:
    if len(m.outputs) == 1:
        o = m.outputs[0]
        return f"output SQNR {_db(o.sqnr_db)} dB, cosine {_cosine(o.cosine)}"
    worst = min(m.outputs, key=lambda o: o.sqnr_db)
    return f"worst output '{worst.name}' SQNR {_db(worst.sqnr_db)} dB (cosine {_cosine(worst.cosine)})"


def _outputs(m: Measurement, indent: str = "    ") -> list[str]:
    lines = []
    if len(m.outputs) >= 2:
        lines += [f"{indent}{o.name}: SQNR {_db(o.sqnr_db)} dB, cosine {_cosine(o.cosine)}" for o in m.outputs[:SHOWN]]
        if len(m.outputs) > SHOWN:
            lines.append(f"{indent}... {len(m.outputs) - SHOWN} more outputs (--json has every one)")
    for o in m.outputs:
        if o.nonfinite:
            lines.append(f"{indent}{o.name}: {o.nonfinite} non-finite FP32 value(s) compared by position"
                         + (f", {o.nonfinite_mismatches} differ in INT8" if o.nonfinite_mismatches else ", all equal in INT8"))
    return lines


def weight_lines(layers: list[LayerWeights], show_all: bool = False) -> list[str]:
    """The weight table: every layer, or the outliers and the worst per-tensor ones (at most ten rows)."""
    if not layers:
        return ["weights: no Conv, ConvTranspose, Gemm or MatMul with a constant weight"]
    shown = layers
    if not show_all and len(layers) > SHOWN:
        keep = {l.name for l in sorted(layers, key=lambda l: (not l.outlier, l.sqnr_per_tensor_db))[:SHOWN]}
        shown = [l for l in layers if l.name in keep]
    name_width = max(len("layer"), *(len(l.name) for l in shown))
    op_width = max(len("op"), *(len(l.op_type) for l in shown))
    folded = any(l.from_fold for l in layers)
    lines = [
        "weights (int8 symmetric; SQNR in dB with one scale per tensor, the worst channel's in brackets, and one scale "
        "per output channel):",
        f"  {'layer':<{name_width}}  {'op':<{op_width}}  {'shape':<14} {'range':<19} {'spread':>6}  {'per-tensor':>15}  "
        f"{'per-channel':>11}" + ("  fold" if folded else ""),
    ]
    for l in shown:
        shape = "x".join(str(d) for d in l.shape)
        span = f"[{_num(l.weight_min)}, {_num(l.weight_max)}]"
        per_tensor = f"{_db(l.sqnr_per_tensor_db)} ({_db(l.worst_channel_per_tensor_db)})"
        row = (f"  {l.name:<{name_width}}  {l.op_type:<{op_width}}  {shape:<14} {span:<19} {_num(l.spread):>6}  {per_tensor:>15}  "
               f"{_db(l.sqnr_per_channel_db):>11}" + (("  yes " if l.from_fold else "      ") if folded else ""))
        if l.outlier:
            row += "  OUTLIER: " + "; ".join(l.reasons)
        lines.append(row.rstrip())
    if len(shown) < len(layers):
        lines.append(f"  ... {len(layers) - len(shown)} more layers (--all-layers shows them; --json has every one)")
    outliers = [l for l in layers if l.outlier]
    lines.append(
        f"  {len(outliers)} outlier layer(s) (spread >= {SPREAD_LIMIT:g}x, or per-channel SQNR < {SQNR_LIMIT_DB:g} dB)"
        if outliers else f"  no outlier (spread >= {SPREAD_LIMIT:g}x, or per-channel SQNR < {SQNR_LIMIT_DB:g} dB)"
    )
    return lines


def equalization_lines(e: Equalization, show_all: bool = False) -> list[str]:
    if not e.pairs:
        return [f"equalization: not applied ({e.reason})"]
    verdict = "kept" if e.kept else "not kept"
    lines = [f"equalization: {len(e.pairs)} pair(s) balanced, {verdict}: {e.reason}",
             f"  every layer in int8: calibration sets {_db(e.selection_before_db)} -> {_db(e.selection_after_db)} dB, "
             f"held-out sets {_db(e.holdout_before_db)} -> {_db(e.holdout_after_db)} dB; float model validation {e.validation}"]
    pairs = sorted(e.pairs, key=lambda p: -p.spread_before)
    shown = pairs if show_all else pairs[:SHOWN]
    for p in shown:
        via = f" -> {p.between}" if p.between else ""
        lines.append(f"  {p.first}{via} -> {p.second}: activation spread {_num(p.spread_before)} -> {_num(p.spread_after)}, "
                     f"SQNR {_db(p.activation_sqnr_before_db)} -> {_db(p.activation_sqnr_after_db)} dB")
    if len(shown) < len(pairs):
        lines.append(f"  ... {len(pairs) - len(shown)} more pairs (--all-layers)")
    return lines


def sensitivity_lines(s: Sensitivity, all_quantized: Measurement, chosen: Measurement | None, show_all: bool = False) -> list[str]:
    measured = len(s.ranking)
    total = measured + len(s.not_measured)
    lines = [f"sensitivity: end-to-end SQNR with each layer alone in int8 on {len(s.ranking_sets)} calibration set(s), most "
             f"costly first ({measured} of {total} layers measured"
             + (f"; the cap --max-layers {s.max_layers} skipped those predicted cheapest)" if s.not_measured else ")")]
    shown = s.ranking if show_all else s.ranking[:SHOWN_RANKING]
    width = max((len(r.name) for r in shown), default=0)
    for r in shown:
        lines.append(f"  {r.name:<{width}}  {_db(r.sqnr_db):>6} dB  (input tensor {_db(r.activation_sqnr_db)} dB, "
                     f"weights {_db(r.weight_sqnr_db)} dB)")
    if len(shown) < measured:
        lines.append(f"  ... {measured - len(shown)} more (--all-layers)")
    how = "the confirmed layers in float" if s.suggested else "every layer in int8"
    short = (f"  the held-out sets measure {_db(chosen.sqnr_db)} dB with {how}: below the target {s.target_sqnr_db:g} dB"
             if chosen is not None and not s.reached else None)
    if not s.selected:
        lines.append(f"every layer in int8 reaches the target {s.target_sqnr_db:g} dB on the calibration sets: "
                     "nothing to keep in float" if s.reached_selection else
                     f"no layer kept in float improves on every layer in int8; the target {s.target_sqnr_db:g} dB is out of reach")
        return lines + ([short] if short else [])
    last = s.curve[-1] if s.curve else None
    how = "reaches" if s.reached_selection else "is the best seen for (target out of reach)"
    lines.append(f"selected on the calibration sets ({len(s.selected)} layer(s) in float {how} {s.target_sqnr_db:g} dB"
                 + (f", {_db(last.selection_sqnr_db)} dB" if last else "") + f"): {names_text(s.selected, show_all)}")
    if short:
        lines.append(short)
    if s.suggested:
        final = f" -> {_db(chosen.sqnr_db)} dB" if chosen is not None else ""
        lines.append(f"confirmed on the held-out sets: keep {len(s.suggested)} layer(s) in float{final} (every layer in "
                     f"int8: {_db(all_quantized.sqnr_db)} dB): {names_text(s.suggested, show_all)}")
        if s.dropped:
            lines.append(f"  {len(s.dropped)} selected layer(s) did not hold their gain on the held-out sets and stay in "
                         f"int8: {names_text(s.dropped, show_all)}")
        lines.append("  quantize with --exclude auto, or --exclude NAME ...")
    else:
        lines.append(f"not confirmed: no prefix of the selected layers gains on the held-out sets (every layer in int8: "
                     f"{_db(all_quantized.sqnr_db)} dB); nothing is suggested")
    return lines


def _settings_line(settings: Settings, placement: dict[str, int]) -> str:
    method = settings.calib_method + (f" {settings.percentile:g}%" if settings.calib_method == "percentile" else "")
    where = ", ".join(f"{placement[role]} {noun}" for role, noun in (("layer", "layer inputs"), ("residual", "residual inputs"),
                                                                         ("flow", "flow-op inputs")) if placement.get(role))
    return (f"  placement {settings.placement} ({where} with every layer in int8); activation scales: {method} "
            f"calibration; layers left in float measured in {settings.float_precision}")


def analysis_lines(a: ModelAnalysis, provider: str, settings: Settings, show_all: bool = False) -> list[str]:
    lines = weight_lines(a.layers, show_all)
    if a.skipped:
        return lines + [f"end to end: skipped ({a.skipped})"]
    if a.quantized is None:
        return lines
    lines.append(f"end to end: {FORM},")
    lines.append(f"  FP32 against INT8, run on onnxruntime ({_provider(provider)}; Q/DQ executed as written)")
    lines.append(_settings_line(settings, a.placement))
    if a.inputs is not None:
        lines.append(f"  inputs: {a.inputs.note}")
    calibration = f"calibration sets {_db(a.quantized_selection.sqnr_db)} dB; " if a.quantized_selection else ""
    lines.append(f"  every layer in int8: {calibration}held-out sets {_measurement(a.quantized)}")
    lines += _outputs(a.quantized)
    if a.equalization is not None:
        lines += equalization_lines(a.equalization, show_all)
    if a.sensitivity is not None:
        lines += sensitivity_lines(a.sensitivity, a.quantized, a.with_suggestion, show_all)
    return lines


def _kinds(layers: list[LayerWeights]) -> str:
    counts = Counter(l.op_type for l in layers)
    return ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))


def int8_lines(report: Int8Report, model_label: str, show_all: bool = False) -> list[str]:
    a = report.model
    if report.regions_unfolded:
        state = (f"{report.blocks_unfolded} unfolded block(s) ({report.regions_unfolded} region(s) the fold merges into one Conv); "
                 "figures for the folded model follow")
    else:
        state = "no unfolded blocks"
    lines = [f"{model_label}: {len(a.layers)} layers ({_kinds(a.layers) or 'none'}); {state}"]
    lines += analysis_lines(a, report.provider, report.settings, show_all)
    if report.folded is not None:
        f = report.folded
        lines.append("")
        lines.append(f"folded ({len(f.layers)} layers: {_kinds(f.layers)}; 'fold' marks the Convs the fold wrote):")
        lines += analysis_lines(f, report.provider, report.settings, show_all)
        if a.quantized is not None and f.quantized is not None:
            lines.append(f"every layer in int8: as given {_db(a.quantized.sqnr_db)} dB, folded {_db(f.quantized.sqnr_db)} dB")
    lines += [f"note: {n}" for n in report.notes]
    return lines


def quantize_lines(report: QuantizeReport, show_all: bool = False) -> list[str]:
    layout = report.layout
    total = len(layout.quantized_layers) + len(layout.float_layers)
    weights = "int8 weights behind DequantizeLinear" if layout.int8_weights else "float weights behind Q/DQ"
    lines = [f"quantized {len(layout.quantized_layers)} of {total} layers to int8: {layout.qdq_pairs} Q/DQ pairs "
             f"({layout.residual_pairs} on residual inputs, {layout.flow_pairs} around pooling/Concat/Resize/reshapes; "
             f"placement {report.settings.placement}), symmetric (zero points 0), weights per output channel "
             f"({weights}), activations per tensor, opset {layout.opset}"]
    if report.excluded:
        how = "selected on the calibration sets, confirmed on the held-out sets" if report.exclude_mode == "auto" else "--exclude"
        lines.append(f"  kept in float ({how}): {names_text(report.excluded, show_all)}")
    elif report.sensitivity is not None and report.sensitivity.reached_selection and not report.sensitivity.selected:
        lines.append(f"  kept in float: none (every layer in int8 reaches {report.sensitivity.target_sqnr_db:g} dB)")
    if report.equalization is not None:
        lines += ["  " + line for line in equalization_lines(report.equalization, show_all)[:2]]
    lines.append(f"  inputs: {report.inputs.note}")
    compare = (f" (every layer in int8: {_db(report.all_quantized.sqnr_db)} dB)"
               if report.all_quantized is not None and report.excluded else "")
    lines.append(f"  measured on onnxruntime ({_provider(report.provider)}; layers left in float in "
                 f"{report.settings.float_precision}), FP32 against the Q/DQ model on the held-out sets: "
                 f"{_measurement(report.measurement)}{compare}")
    lines += _outputs(report.measurement)
    if report.sensitivity is not None and report.sensitivity.ranking:
        s = report.sensitivity
        head = ", ".join(f"{r.name} {_db(r.sqnr_db)} dB" for r in s.ranking[:3])
        lines.append(f"  most costly alone: {head}" + (" ..." if len(s.ranking) > 3 else ""))
        if s.selected:
            last = s.curve[-1]
            lines.append(f"  selection: {len(s.selected)} layer(s) in float give {_db(last.selection_sqnr_db)} dB on the "
                         f"calibration sets and {_db(last.holdout_sqnr_db)} dB on the held-out sets; "
                         f"{len(s.suggested)} confirmed")
    lines += [f"note: {n}" for n in report.notes]
    return lines
