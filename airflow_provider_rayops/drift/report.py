"""The drift report a person reads: one self-contained HTML page (no script, no external file).

It shows the verdict, the table of every column (test, statistic, threshold, verdict), the
reference-vs-current histogram of each drifted column, and the distribution of each prediction
column. Every text that comes from the data (column names, category values, URIs) is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

from airflow_provider_rayops.drift.compute import ColumnDrift, Distribution, DriftResult

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2328;max-width:70rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}
.verdict{padding:.75rem 1rem;border-radius:6px;font-weight:600}
.drift{background:#ffebe9;border:1px solid #ff8182}.calm{background:#dafbe1;border:1px solid #4ac26b}
.none{background:#fff8c5;border:1px solid #d4a72c}
table{border-collapse:collapse;margin-top:.5rem}td,th{padding:.3rem .6rem;border-bottom:1px solid #d0d7de;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.drifted td{background:#fff5f5}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}
figure{margin:1rem 0}figcaption{font-weight:600;margin-bottom:.3rem}.meta{color:#57606a}
"""
_REFERENCE_COLOR = "#8c959f"
_CURRENT_COLOR = "#cf222e"


def render_html(result: DriftResult, *, title: str | None = None, details: Mapping[str, Any] | None = None) -> str:
    """The report of `result`; `details` are extra facts shown under the title (pipeline, model version...)."""
    heading = title or "Drift report"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{_e(heading)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(heading)}</h1>",
        _facts(result, details or {}),
        _verdict(result),
        _problems(result),
        "<h2>Columns</h2>",
        _table(result),
    ]
    drifted = [column for column in result.columns.values() if column.drifted]
    if drifted:
        parts.append("<h2>Drifted columns</h2>")
        parts.append(_legend())
        parts.extend(_figure(column) for column in drifted)
    if result.prediction:
        parts.append("<h2>Predictions</h2>")
        parts.append(_legend())
        parts.extend(_figure(column) for column in result.prediction.values())
    parts.append("</body></html>")
    return "\n".join(parts)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _facts(result: DriftResult, details: Mapping[str, Any]) -> str:
    rows = {
        **details,
        "reference": f"{result.reference} ({result.reference_rows:,} rows)",
        "current": f"{result.current} ({result.current_rows:,} rows)",
        "correction for many columns": result.correction,
        "computed in": f"{result.seconds:.2f} s",
    }
    return "<table class='meta'>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows.items()) + "</table>"


def _verdict(result: DriftResult) -> str:
    if result.problems:
        return f"<p class='verdict none'>No verdict: {len(result.problems)} problem(s) with the input (below).</p>"
    drifted, judged = len(result.drifted_columns), len(result.columns)
    share = f"{drifted} of {judged} columns drifted ({result.drift_share:.0%}); the dataset drifts at {result.drift_share_limit:.0%} or more."
    prediction = "" if result.prediction_drift is None else f" Prediction drift: {'yes' if result.prediction_drift else 'no'}."
    if result.dataset_drift:
        return f"<p class='verdict drift'>Dataset drift. {_e(share)}{_e(prediction)}</p>"
    return f"<p class='verdict calm'>No dataset drift. {_e(share)}{_e(prediction)}</p>"


def _problems(result: DriftResult) -> str:
    if not result.problems and not result.skipped:
        return ""
    items = [f"<li>{_e(problem)}</li>" for problem in result.problems]
    items += [f"<li>column {_e(repr(name))} not compared: {_e(reason)}</li>" for name, reason in result.skipped.items()]
    return "<ul>" + "".join(items) + "</ul>"


def _table(result: DriftResult) -> str:
    head = "<tr><th>column</th><th>kind</th><th>test</th><th>statistic</th><th>threshold</th><th>drifted</th><th>missing in current</th></tr>"
    rows = []
    for group, columns in (("", result.columns), (" (prediction)", result.prediction)):
        for name, column in columns.items():
            shown = column.adjusted if column.adjusted is not None else column.statistic
            adjusted = " (adjusted)" if column.adjusted is not None else ""
            rows.append(
                f"<tr class='{'drifted' if column.drifted else ''}'><td>{_e(name)}{group}</td><td>{column.kind}</td>"
                f"<td>{column.method}</td><td class='num'>{_number(shown)}{adjusted}</td>"
                f"<td class='num'>{column.threshold:g}</td><td>{'yes' if column.drifted else 'no'}</td>"
                f"<td class='num'>{column.current_missing:,}</td></tr>"
            )
    return f"<table>{head}{''.join(rows)}</table>"


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4g}"


def _legend() -> str:
    return (
        f"<p class='legend'>share of rows:<span style='background:{_REFERENCE_COLOR}'></span>reference"
        f"<span style='background:{_CURRENT_COLOR}'></span>current</p>"
    )


def _figure(column: ColumnDrift) -> str:
    caption = f"{column.name}: {column.method} {_number(column.statistic)} (threshold {column.threshold:g})"
    return f"<figure><figcaption>{_e(caption)}</figcaption>{_bars(column.distribution)}</figure>"


def _bars(distribution: Distribution) -> str:
    """Side-by-side bars of both sides' shares per bin or value, as inline SVG."""
    ref_total = max(sum(distribution.reference), 1)
    cur_total = max(sum(distribution.current), 1)
    ref = [count / ref_total for count in distribution.reference]
    cur = [count / cur_total for count in distribution.current]
    if distribution.edges is not None:
        edges = distribution.edges
        labels = [f"{edges[i]:.3g}" for i in range(len(edges) - 1)]
    else:
        labels = list(distribution.values or [])
    slots = len(labels)
    width, height, bottom, left = max(360, 34 * slots), 180, 40, 40
    slot = (width - left) / max(slots, 1)
    top = max([*ref, *cur, 1e-9])
    shapes = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height + bottom}' role='img'>"]
    shapes.append(f"<text x='0' y='12' font-size='10'>{top:.0%}</text>")
    shapes.append(f"<line x1='{left}' y1='{height}' x2='{width}' y2='{height}' stroke='#57606a'/>")
    for i, label in enumerate(labels):
        x = left + i * slot
        for offset, share, color in ((0.1, ref[i], _REFERENCE_COLOR), (0.5, cur[i], _CURRENT_COLOR)):
            bar = (height - 16) * share / top
            shapes.append(
                f"<rect x='{x + offset * slot:.1f}' y='{height - bar:.1f}' width='{0.4 * slot:.1f}' height='{bar:.1f}' "
                f"fill='{color}'><title>{_e(label)}: {share:.1%}</title></rect>"
            )
        shown = label if len(label) <= 10 else label[:9] + "…"
        shapes.append(
            f"<text x='{x + slot / 2:.1f}' y='{height + 12}' font-size='9' text-anchor='end' "
            f"transform='rotate(-35 {x + slot / 2:.1f} {height + 12})'>{_e(shown)}</text>"
        )
    shapes.append("</svg>")
    return "".join(shapes)
