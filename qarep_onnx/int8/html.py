"""The INT8 reports as one self-contained HTML page: tables and inline SVG figures, nothing fetched.

What a person wants to look at: per-layer weight SQNR per tensor and per channel, the sensitivity
ranking, SQNR against the number of layers kept in float (calibration and held-out curves), and
equalization before and after.  Every number on the page is written from the report's ``to_dict()``
and carries the JSON path it came from and its exact value (``data-key``, ``data-value``), so a test
(or a person) can check each figure against the JSON.  No script, stylesheet or font is loaded from
anywhere; the page has no script at all.
"""

from __future__ import annotations

import html
import math

from .report import Int8Report, QuantizeReport

WIDTH = 720
BAR = 14  # height of one bar row in the bar charts
STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td.n,th.n{text-align:left}"
    "h1{font-size:20px}h2{font-size:17px;margin-top:1.6em}h3{font-size:15px}.note{color:#666}"
    "svg text{font:11px system-ui,sans-serif}"
)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _get(document: dict, key: str):
    value = document
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _text(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"


class _Page:
    """Builds the page from one JSON document; every figure is tagged with its JSON path."""

    def __init__(self, document: dict) -> None:
        self.doc = document
        self.parts: list[str] = []

    def figure(self, key: str, digits: int = 1, tag: str = "td") -> str:
        value = _get(self.doc, key)
        exact = "null" if value is None else repr(value)
        return f'<{tag} data-key="{html.escape(key)}" data-value="{exact}">{_text(value, digits)}</{tag}>'

    def add(self, text: str) -> None:
        self.parts.append(text)

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        cells = "".join(f'<th class="n">{html.escape(h)}</th>' if k == 0 else f"<th>{html.escape(h)}</th>" for k, h in enumerate(head))
        body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
        self.add(f"<table><tr>{cells}</tr>{body}</table>")

    def bars(self, title: str, labels: list[str], series: list[tuple[str, list[str]]], unit: str = "dB") -> None:
        """Horizontal bars: one row per label, one bar per series (each value given by its JSON path)."""
        values = [[_get(self.doc, k) for k in keys] for _, keys in series]
        finite = [v for row in values for v in row if v is not None and math.isfinite(v)]
        top = max(finite + [1.0])
        left, rows = 260, len(labels)
        height = rows * BAR * len(series) + 40
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img">'
               f"<title>{html.escape(title)}</title>"]
        for i, label in enumerate(labels):
            y0 = 20 + i * BAR * len(series)
            out.append(f'<text x="{left - 6}" y="{y0 + BAR - 3}" text-anchor="end">{html.escape(label[-40:])}</text>')
            for j, (name, keys) in enumerate(series):
                value = values[j][i]
                width = 0 if value is None or not math.isfinite(value) else max(0.0, value) / top * (WIDTH - left - 60)
                exact = "null" if value is None else repr(value)
                out.append(f'<rect x="{left}" y="{y0 + j * BAR}" width="{width:.1f}" height="{BAR - 2}" fill="{COLOURS[j]}" '
                           f'data-key="{html.escape(keys[i])}" data-value="{exact}"><title>{html.escape(name)}: '
                           f'{_text(value)} {unit}</title></rect>')
        legend = " ".join(f'<tspan fill="{COLOURS[j]}">&#9632; {html.escape(n)}</tspan>' for j, (n, _) in enumerate(series))
        out.append(f'<text x="{left}" y="12">{legend}</text></svg>')
        self.add("".join(out))

    def curve(self, title: str, base: str, points: int, target: float | None) -> None:
        """SQNR against the number of layers kept in float: calibration and held-out lines."""
        keys = {"calibration sets": "selection_sqnr_db", "held-out sets": "holdout_sqnr_db"}
        data = {name: [(_get(self.doc, f"{base}.{k}.count"), _get(self.doc, f"{base}.{k}.{field}"), f"{base}.{k}.{field}")
                       for k in range(points)] for name, field in keys.items()}
        ys = [y for series in data.values() for _, y, _ in series if y is not None] + ([target] if target is not None else [])
        if not ys:
            return
        low, high = min(ys) - 1.0, max(ys) + 1.0
        xmax = max(max(x for x, _, _ in data["calibration sets"]), 1)
        w, h, pad = WIDTH, 260, 40

        def sx(x):
            return pad + x / xmax * (w - 2 * pad)

        def sy(y):
            return h - pad - (y - low) / (high - low) * (h - 2 * pad)

        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img"><title>{html.escape(title)}</title>',
               f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>',
               f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">layers kept in float</text>',
               f'<text x="4" y="{pad - 10}">dB ({low:.1f} .. {high:.1f})</text>']
        if target is not None:
            out.append(f'<line x1="{pad}" y1="{sy(target):.1f}" x2="{w - pad}" y2="{sy(target):.1f}" stroke="#999" '
                       f'stroke-dasharray="4"/><text x="{w - pad}" y="{sy(target) - 3:.1f}" text-anchor="end">target</text>')
        for j, (name, series) in enumerate(data.items()):
            shown = [(x, y, k) for x, y, k in series if y is not None]
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in shown)
            out.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS[j]}"/>')
            for x, y, k in shown:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{COLOURS[j]}" data-key="{k}" '
                           f'data-value="{y!r}"><title>{name}, {x} in float: {y:.2f} dB</title></circle>')
            out.append(f'<text x="{w - pad}" y="{pad + 14 * j}" text-anchor="end" fill="{COLOURS[j]}">{name}</text>')
        out.append("</svg>")
        self.add("".join(out))

    def page(self, title: str) -> str:
        return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title><style>"
                + STYLE + "</style></head><body>" + "".join(self.parts) + "</body></html>\n")


def _weights(page: _Page, base: str, count: int) -> None:
    if not count:
        return
    page.add("<h3>Weights: SQNR per tensor and per output channel</h3>")
    labels = [_get(page.doc, f"{base}.{k}.name") for k in range(count)]
    page.bars("weight SQNR", labels, [("one scale per tensor", [f"{base}.{k}.sqnr_per_tensor_db" for k in range(count)]),
                                      ("one scale per output channel", [f"{base}.{k}.sqnr_per_channel_db" for k in range(count)])])
    rows = [[f'<td class="n">{html.escape(labels[k])}</td>', f"<td>{html.escape(_get(page.doc, f'{base}.{k}.op_type'))}</td>",
             page.figure(f"{base}.{k}.spread", 2), page.figure(f"{base}.{k}.sqnr_per_tensor_db"),
             page.figure(f"{base}.{k}.worst_channel_per_tensor_db"), page.figure(f"{base}.{k}.sqnr_per_channel_db"),
             page.figure(f"{base}.{k}.outlier")] for k in range(count)]
    page.table(["layer", "op", "spread", "per tensor dB", "worst channel dB", "per channel dB", "outlier"], rows)


def _sensitivity(page: _Page, base: str) -> None:
    s = _get(page.doc, base)
    if s is None:
        return
    page.add("<h3>Sensitivity: end-to-end SQNR with each layer alone in int8 (calibration sets)</h3>")
    n = len(s["ranking"])
    page.bars("sensitivity", [r["name"] for r in s["ranking"]], [("alone in int8", [f"{base}.ranking.{k}.sqnr_db" for k in range(n)])])
    page.table(["layer", "alone dB", "input tensor dB", "weights dB"],
               [[f'<td class="n">{html.escape(r["name"])}</td>', page.figure(f"{base}.ranking.{k}.sqnr_db"),
                 page.figure(f"{base}.ranking.{k}.activation_sqnr_db"), page.figure(f"{base}.ranking.{k}.weight_sqnr_db")]
                for k, r in enumerate(s["ranking"])])
    if s["curve"]:
        page.add("<h3>SQNR against the number of layers kept in float</h3>")
        page.curve("SQNR against layers kept in float", f"{base}.curve", len(s["curve"]), s["target_sqnr_db"])
        page.table(["layers in float", "calibration dB", "held-out dB"],
                   [[page.figure(f"{base}.curve.{k}.count"), page.figure(f"{base}.curve.{k}.selection_sqnr_db"),
                     page.figure(f"{base}.curve.{k}.holdout_sqnr_db")] for k in range(len(s["curve"]))])
    kept = ", ".join(html.escape(n) for n in s["suggested_exclude"]) or "none"
    page.add(f"<p>Selected on the calibration sets: {len(s['selected'])} layer(s); confirmed on the held-out sets: {kept}.</p>")


def _equalization(page: _Page, base: str) -> None:
    e = _get(page.doc, base)
    if e is None:
        return
    page.add("<h3>Equalization</h3>")
    page.table(["every layer in int8", "before dB", "after dB"],
               [['<td class="n">calibration sets</td>', page.figure(f"{base}.selection_before_db"), page.figure(f"{base}.selection_after_db")],
                ['<td class="n">held-out sets</td>', page.figure(f"{base}.holdout_before_db"), page.figure(f"{base}.holdout_after_db")]])
    page.add(f"<p>{'kept' if e['kept'] else 'not kept'}: {html.escape(e['reason'])}</p>")
    n = len(e["pairs"])
    if n:
        labels = [f"{p['first']} -> {p['second']}" for p in e["pairs"]]
        page.bars("activation spread", labels, [("spread before", [f"{base}.pairs.{k}.spread_before" for k in range(n)]),
                                                ("spread after", [f"{base}.pairs.{k}.spread_after" for k in range(n)])], "x")
        page.table(["pair", "spread before", "spread after", "activation dB before", "after"],
                   [[f'<td class="n">{html.escape(labels[k])}</td>', page.figure(f"{base}.pairs.{k}.spread_before", 2),
                     page.figure(f"{base}.pairs.{k}.spread_after", 2), page.figure(f"{base}.pairs.{k}.activation_sqnr_before_db"),
                     page.figure(f"{base}.pairs.{k}.activation_sqnr_after_db")] for k in range(n)])


def _analysis(page: _Page, base: str, title: str) -> None:
    a = _get(page.doc, base)
    page.add(f"<h2>{html.escape(title)}</h2>")
    if a.get("quantized"):
        rows = [['<td class="n">every layer in int8, held-out sets</td>', page.figure(f"{base}.quantized.sqnr_db")]]
        if a.get("quantized_selection"):
            rows.insert(0, ['<td class="n">every layer in int8, calibration sets</td>',
                            page.figure(f"{base}.quantized_selection.sqnr_db")])
        if a.get("with_suggestion"):
            rows.append(['<td class="n">confirmed layers in float, held-out sets</td>', page.figure(f"{base}.with_suggestion.sqnr_db")])
        page.table(["figure", "SQNR dB"], rows)
    if a.get("skipped"):
        page.add(f'<p class="note">end to end skipped: {html.escape(a["skipped"])}</p>')
    _weights(page, f"{base}.layers", len(a["layers"]))
    _equalization(page, f"{base}.equalization")
    _sensitivity(page, f"{base}.sensitivity")


def _header(page: _Page, title: str, notes: list[str]) -> None:
    settings = page.doc["settings"]
    page.add(f"<h1>{html.escape(title)}</h1><p>" + ", ".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in settings.items())
             + f"; provider {html.escape(page.doc['provider'])}</p>")
    page.add("".join(f'<p class="note">{html.escape(n)}</p>' for n in notes))


def int8_html(report: Int8Report, label: str) -> str:
    """The ``int8`` report as a page."""
    page = _Page(report.to_dict())
    _header(page, f"qarep-onnx int8: {label}", report.notes)
    _analysis(page, "model", "The model as given")
    if report.folded is not None:
        _analysis(page, "folded", "Folded")
    return page.page(f"qarep-onnx int8: {label}")


def quantize_html(report: QuantizeReport, label: str) -> str:
    """The ``quantize`` report as a page."""
    page = _Page(report.to_dict())
    _header(page, f"qarep-onnx quantize: {label}", report.notes)
    page.add("<h2>The written Q/DQ model</h2>")
    page.table(["figure", "value"],
               [['<td class="n">held-out SQNR dB</td>', page.figure("measurement.sqnr_db")],
                ['<td class="n">Q/DQ pairs</td>', page.figure("layout.qdq_pairs")]]
               + ([['<td class="n">every layer in int8, held-out dB</td>', page.figure("all_quantized.sqnr_db")]]
                  if report.all_quantized is not None else []))
    _equalization(page, "equalization")
    _sensitivity(page, "sensitivity")
    return page.page(f"qarep-onnx quantize: {label}")
