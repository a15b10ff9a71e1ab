"""Text for people: a report, its explanation, a validation, a latency comparison, as lines.

Pure functions from data to lines; the CLI prints them.
"""

from __future__ import annotations

from .bench import Latency
from .report import Report
from .validate import ValidationResult

SHOWN_OPS = ("Conv", "BatchNormalization", "Add", "Mul")


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def summary_lines(report: Report, explained: bool = False) -> list[str]:
    lines = [f"folded {report.blocks_folded} blocks ({report.regions_folded} regions) into single Convs"]
    rows = [(op, str(report.op_counts_before.get(op, 0)), str(report.op_counts_after.get(op, 0))) for op in SHOWN_OPS]
    if report.stats_before and report.stats_after:
        rows.append(("parameters", _count(report.stats_before.parameters), _count(report.stats_after.parameters)))
        rows.append(("FLOPs (est.)", _count(report.stats_before.flops), _count(report.stats_after.flops)))
    width = max(len(r[0]) for r in rows)
    lines.append(f"  {'':<{width}}  {'before':>8}  {'after':>8}")
    lines += [f"  {name:<{width}}  {before:>8}  {after:>8}" for name, before, after in rows]
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
        geometry = (
            f"{'x'.join(map(str, fold.kernel))} stride {'x'.join(map(str, fold.stride))} "
            f"dilation {'x'.join(map(str, fold.dilation))} groups {fold.groups}"
        )
        where = f" in {fold.graph}" if fold.graph else ""
        lines.append(
            f"folded  {fold.output!r}{where}: {fold.branches} branch(es) -> Conv {fold.conv_name!r} ({geometry}); "
            f"removed {len(fold.removed_nodes)} nodes: {', '.join(fold.removed_nodes)}"
        )
    for refusal in report.refusals:
        lines.append(f"refused [{refusal.code}] {refusal.message} (nodes: {', '.join(refusal.nodes)})")
    if not lines:
        lines.append("no linear region to fold and nothing refused")
    return lines


def validation_lines(result: ValidationResult) -> list[str]:
    verdict = "passed" if result.passed else "FAILED"
    lines = [result.provider_note, f"validation {verdict} (rtol {result.rtol:g}, atol {result.atol:g})"]
    for o in result.outputs:
        mark = "ok" if o.passed else "MISMATCH"
        lines.append(f"  {o.name}: max|a-b| {o.max_abs_error:.3g} (tolerance {o.tolerance:.3g}, relative {o.relative_error:.3g}) {mark}")
    return lines


def latency_lines(original: Latency, optimized: Latency, provider_note: str) -> list[str]:
    speedup = original.median_ms / optimized.median_ms if optimized.median_ms else float("inf")
    return [
        provider_note,
        f"  {'':<10}  {'median':>10}  {'p90':>10}  runs",
        f"  {'original':<10}  {original.median_ms:>8.3f}ms  {original.p90_ms:>8.3f}ms  {original.runs}",
        f"  {'optimized':<10}  {optimized.median_ms:>8.3f}ms  {optimized.p90_ms:>8.3f}ms  {optimized.runs}",
        f"speedup {speedup:.2f}x (median)",
    ]
