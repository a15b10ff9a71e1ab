"""Text for people: a report, its explanation, a validation, a latency comparison, as lines.

Pure functions from data to lines; the CLI prints them.
"""

from __future__ import annotations

import math

from ..fold.ops import SUMMARY_ROWS, SUMMARY_ROWS_IF_PRESENT
from ..fold.report import Report
from ..runtime.bench import Latency
from ..runtime.validation import ValidationResult


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def summary_lines(report: Report, explained: bool = False) -> list[str]:
    target = "Convs" if all(f.op_types == ("Conv",) for f in report.folds) else "operators"
    lines = [f"folded {report.blocks_folded} blocks ({report.regions_folded} regions) into single {target}"]
    before, after = report.op_counts_before, report.op_counts_after
    shown = list(SUMMARY_ROWS) + [op for op in SUMMARY_ROWS_IF_PRESENT if before.get(op) or after.get(op)]
    rows = [(op, str(before.get(op, 0)), str(after.get(op, 0))) for op in shown]
    if report.stats_before and report.stats_after:
        rows.append(("parameters", _count(report.stats_before.parameters), _count(report.stats_after.parameters)))
        rows.append(("FLOPs (est.)", _count(report.stats_before.flops), _count(report.stats_after.flops)))
    width = max(len(r[0]) for r in rows)
    lines.append(f"  {'':<{width}}  {'before':>8}  {'after':>8}")
    lines += [f"  {name:<{width}}  {before:>8}  {after:>8}" for name, before, after in rows]
    if report.qdq_pairs or report.dequantized_constants:
        lines.append(
            f"the model has {report.qdq_pairs} Q/DQ pair(s) and {report.dequantized_constants} dequantized weight(s): "
            "no block with Q/DQ inside is folded, and no weight is dequantized ahead of time"
        )
    if report.refusals:
        codes = sorted({r.code for r in report.refusals})
        hint = "" if explained else "; --explain says why"
        lines.append(f"refused {len(report.refusals)} ({', '.join(codes)}){hint}")
    if report.validation is not None:
        lines += validation_lines(report.validation)
    return lines


def explain_lines(report: Report) -> list[str]:
    lines = []
    for fold in report.folds:
        geometry = ""
        if fold.kernel:
            geometry = (
                f" ({'x'.join(map(str, fold.kernel))} stride {'x'.join(map(str, fold.stride))} "
                f"dilation {'x'.join(map(str, fold.dilation))} groups {fold.groups})"
            )
        where = f" in {fold.graph}" if fold.graph else ""
        new = " + ".join(f"{op_type} {name!r}" for op_type, name in zip(fold.op_types, fold.nodes))
        lines.append(
            f"folded  {fold.output!r}{where}: {fold.branches} branch(es) -> {new}{geometry}; "
            f"removed {len(fold.removed_nodes)} nodes: {', '.join(fold.removed_nodes)}"
        )
    for refusal in report.refusals:
        lines.append(f"refused [{refusal.code}] {refusal.message} (nodes: {', '.join(refusal.nodes)})")
    if not lines:
        lines.append("no linear region to fold and nothing refused")
    return lines


def validation_lines(result: ValidationResult) -> list[str]:
    verdict = {"passed": "passed", "failed": "FAILED", "inconclusive": "INCONCLUSIVE"}[result.status]
    if result.tolerance == "calibrated":
        rule = f"each output within {result.factor:g}x the original model's own float noise"
    elif result.tolerance == "explicit":
        rule = f"rtol {result.rtol:g}, atol {result.atol:g}"
    else:
        rule = f"fixed rtol {result.fixed_rtol:g}: the model's noise floor could not be measured"
    if result.tolerance == "calibrated" and result.atol:
        rule += f", plus atol {result.atol:g}"
    sets = f"{len(result.samples)} input sets" if len(result.samples) != 1 else (result.samples[0] if result.samples else "")
    lines = [result.provider_note, f"validation {verdict} ({rule}; {sets})"]
    for o in result.outputs:
        if o.empty:
            lines.append(f"  {o.name}: empty (no elements to compare)")
            continue
        mark = "ok" if o.passed else "MISMATCH"
        noise = ""
        if o.noise_floor is not None:
            noise = f"; {_multiple(o.noise_multiple)} the model's own float noise {o.noise_floor:.2g}"
        lines.append(
            f"  {o.name}: max|a-b| {o.max_abs_error:.3g} (relative {o.relative_error:.3g}{noise}; "
            f"tolerance {o.tolerance:.3g}) {mark}"
        )
    lines += [f"  note: {note}" for note in result.notes]
    lines += [f"  not proven: {reason}" for reason in result.unproven]
    return lines


def _multiple(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "inf x"
    return f"{x:.2g}x"


def latency_lines(original: Latency, optimized: Latency, provider_note: str) -> list[str]:
    speedup = original.median_ms / optimized.median_ms if optimized.median_ms else float("inf")
    return [
        provider_note,
        f"  {'':<10}  {'median':>10}  {'p90':>10}  runs",
        f"  {'original':<10}  {original.median_ms:>8.3f}ms  {original.p90_ms:>8.3f}ms  {original.runs}",
        f"  {'optimized':<10}  {optimized.median_ms:>8.3f}ms  {optimized.p90_ms:>8.3f}ms  {optimized.runs}",
        f"speedup {speedup:.2f}x (median)",
    ]
