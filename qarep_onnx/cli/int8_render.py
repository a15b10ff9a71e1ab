"""The INT8 reports as lines of text for people; the CLI prints them.  Pure functions from data to lines."""

from __future__ import annotations

import math
from collections import Counter

from ..int8.report import (
    Int8Report,
    LayerWeights,
    Measurement,
    ModelAnalysis,
    QuantizeReport,
    Sensitivity,
)
from ..int8.weights import SPREAD_LIMIT, SQNR_LIMIT_DB

SHOWN_LAYERS = 12  # weight rows shown without --all-layers (outliers always are)
SHOWN_RANKING = 5
FORM = "Q/DQ int8 as TensorRT's explicit quantization takes it (zero points 0, weights per output channel, activations per tensor)"


def _db(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.1f}"


def _provider(name: str) -> str:
    return {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT"}.get(name, name)


def _num(x: float) -> str:
    return f"{x:.3g}"


def _measurement(m: Measurement) -> str:
    if len(m.outputs) == 1:
        o = m.outputs[0]
        return f"output SQNR {_db(o.sqnr_db)} dB, cosine {o.cosine:.5f}"
    worst = min(m.outputs, key=lambda o: o.sqnr_db)
    return f"worst output '{worst.name}' SQNR {_db(worst.sqnr_db)} dB (cosine {worst.cosine:.5f})"


def _outputs(m: Measurement, indent: str = "    ") -> list[str]:
    if len(m.outputs) < 2:
        return []
    return [f"{indent}{o.name}: SQNR {_db(o.sqnr_db)} dB, cosine {o.cosine:.5f}" for o in m.outputs]


def weight_lines(layers: list[LayerWeights], show_all: bool = False) -> list[str]:
    """The weight table: every layer, or the outliers and the worst per-tensor ones."""
    if not layers:
        return ["weights: no Conv, ConvTranspose, Gemm or MatMul with a constant weight"]
    shown = layers
    if not show_all and len(layers) > SHOWN_LAYERS:
        worst = sorted(layers, key=lambda l: (not l.outlier, l.sqnr_per_tensor_db))[:SHOWN_LAYERS]
        keep = {l.name for l in worst} | {l.name for l in layers if l.outlier}
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


def sensitivity_lines(s: Sensitivity, all_quantized: Measurement, chosen: Measurement | None, show_all: bool = False) -> list[str]:
    measured = len(s.ranking)
    total = measured + len(s.not_measured)
    lines = [f"sensitivity: end-to-end SQNR with each layer alone in int8, most costly first ({measured} of {total} layers measured"
             + (f"; the cap --max-layers {s.max_layers} skipped those predicted cheapest)" if s.not_measured else ")")]
    shown = s.ranking if show_all else s.ranking[:SHOWN_RANKING]
    width = max((len(r.name) for r in shown), default=0)
    for r in shown:
        lines.append(f"  {r.name:<{width}}  {_db(r.sqnr_db):>6} dB  (input tensor {_db(r.activation_sqnr_db)} dB, "
                     f"weights {_db(r.weight_sqnr_db)} dB)")
    if len(shown) < measured:
        lines.append(f"  ... {measured - len(shown)} more (--all-layers)")
    if not s.suggested:
        if s.reached:
            lines.append(f"every layer in int8 reaches the target {s.target_sqnr_db:g} dB: nothing to keep in float")
        else:
            lines.append(f"no layer kept in float improves on every layer in int8; the target {s.target_sqnr_db:g} dB is out of reach")
        return lines
    names = " ".join(s.suggested)
    if s.reached:
        lines.append(f"keep in float for >= {s.target_sqnr_db:g} dB ({len(s.suggested)} layer(s)): {names}")
    else:
        lines.append(f"the target {s.target_sqnr_db:g} dB is out of reach; the best set seen keeps {len(s.suggested)} "
                     f"layer(s) in float: {names}")
    result = f" -> {_db(chosen.sqnr_db)} dB" if chosen is not None else ""
    lines.append(f"  with them in float{result} (every layer in int8: {_db(all_quantized.sqnr_db)} dB); "
                 "quantize with --exclude auto, or --exclude NAME ...")
    return lines


def analysis_lines(a: ModelAnalysis, provider: str, show_all: bool = False) -> list[str]:
    lines = weight_lines(a.layers, show_all)
    if a.skipped:
        return lines + [f"end to end: skipped ({a.skipped})"]
    if a.quantized is None:
        return lines
    lines.append(f"end to end: {FORM},")
    lines.append(f"  FP32 against INT8 on held-out inputs, run on onnxruntime ({_provider(provider)}; Q/DQ executed as written)")
    if a.inputs is not None:
        lines.append(f"  inputs: {a.inputs.note}")
    lines.append(f"  every layer in int8: {_measurement(a.quantized)}")
    lines += _outputs(a.quantized)
    if a.sensitivity is not None:
        lines += sensitivity_lines(a.sensitivity, a.quantized, a.with_suggestion, show_all)
    return lines


def int8_lines(report: Int8Report, model_label: str, show_all: bool = False) -> list[str]:
    a = report.model
    counts = Counter(l.op_type for l in a.layers)
    kinds = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
    if report.regions_unfolded:
        state = (f"{report.blocks_unfolded} unfolded block(s) ({report.regions_unfolded} region(s) the fold merges into one Conv); "
                 "figures for the folded model follow")
    else:
        state = "no unfolded blocks"
    lines = [f"{model_label}: {len(a.layers)} layers ({kinds or 'none'}); {state}"]
    lines += analysis_lines(a, report.provider, show_all)
    if report.folded is not None:
        f = report.folded
        counts = Counter(l.op_type for l in f.layers)
        kinds = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
        lines.append("")
        lines.append(f"folded ({len(f.layers)} layers: {kinds}; 'fold' marks the Convs the fold wrote):")
        lines += analysis_lines(f, report.provider, show_all)
        if a.quantized is not None and f.quantized is not None:
            lines.append(f"every layer in int8: as given {_db(a.quantized.sqnr_db)} dB, folded {_db(f.quantized.sqnr_db)} dB")
    lines += [f"note: {n}" for n in report.notes]
    return lines


def quantize_lines(report: QuantizeReport) -> list[str]:
    layout = report.layout
    total = len(layout.quantized_layers) + len(layout.float_layers)
    lines = [f"quantized {len(layout.quantized_layers)} of {total} layers to int8: {layout.qdq_pairs} Q/DQ pairs, "
             f"symmetric (zero points 0), weights per output channel, activations per tensor, opset {layout.opset}"]
    if report.excluded:
        how = "suggested by the sensitivity analysis" if report.exclude_mode == "auto" else "--exclude"
        lines.append(f"  kept in float ({how}): {' '.join(report.excluded)}")
    elif report.sensitivity is not None and report.sensitivity.reached:
        lines.append(f"  kept in float: none (every layer in int8 reaches {report.sensitivity.target_sqnr_db:g} dB)")
    lines.append(f"  inputs: {report.inputs.note}")
    compare = (f" (every layer in int8: {_db(report.all_quantized.sqnr_db)} dB)"
               if report.all_quantized is not None and report.excluded else "")
    lines.append(f"  measured on onnxruntime ({_provider(report.provider)}), "
                 f"FP32 against the Q/DQ model: {_measurement(report.measurement)}{compare}")
    lines += _outputs(report.measurement)
    if report.sensitivity is not None:
        s = report.sensitivity
        head = ", ".join(f"{r.name} {_db(r.sqnr_db)} dB" for r in s.ranking[:3])
        lines.append(f"  most costly alone: {head}" + (" ..." if len(s.ranking) > 3 else ""))
    lines += [f"note: {n}" for n in report.notes]
    return lines
