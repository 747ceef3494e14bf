"""A student's own training run as inline SVG, beside the pass mark (no JavaScript, no files).

Input: one ``tests[i].extra_data["training"]`` record (``autograder/grade/record.py``). Every
metric is a bar of the student's value against a dashed line at the pass mark, green when it
passes; every curve a line over the iterations. Every text is escaped; the size is bounded by
the record's own bounds, whatever the record holds.
"""
from __future__ import annotations

import math
from html import escape

WIDTH = 640
LEFT, RIGHT = 12, 12
METRIC_H = 58
CURVE_H = 170
GOOD, BAD, MARK, INK = "#3b7d4f", "#b83232", "#1d2330", "#5a6275"


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def passes(metric: dict) -> bool:
    value, mark = _num(metric.get("value")), _num(metric.get("pass_mark"))
    if value is None or mark is None:
        return False
    return value <= mark if metric.get("pass_if") == "below" else value > mark


def metric_svg(metric: dict, top: float) -> str:
    """One metric: its bar, the pass mark, and a caption; ``top`` is the row's y offset."""
    value, mark = _num(metric.get("value")), _num(metric.get("pass_mark"))
    known = [v for v in (value, mark, 0.0) if v is not None]
    lo, hi = min(known), max(known)
    span = (hi - lo) * 1.15 or 1.0
    lo = lo - 0.05 * span if lo < 0 else lo
    inner = WIDTH - LEFT - RIGHT

    def x(v: float) -> float:
        return LEFT + inner * (v - lo) / span

    ok = passes(metric)
    word = "at most" if metric.get("pass_if") == "below" else "above"
    caption = (f"{metric.get('name', '')}: {_fmt(value)} (pass mark: {word} {_fmt(mark)}) — "
               f"{'passed' if ok else 'not passed'}")
    parts = [f'<g class="metric" data-passed="{str(ok).lower()}">',
             f'<text x="{LEFT}" y="{top + 14}" font-size="13" fill="{MARK}">'
             f'{escape(caption)}</text>',
             f'<rect x="{LEFT}" y="{top + 22}" width="{inner}" height="18" fill="#eef0f5"/>']
    if value is not None:
        x0, x1 = sorted((x(0.0), x(value)))
        parts.append(f'<rect class="value-bar" x="{x0:.1f}" y="{top + 22}" '
                     f'width="{max(x1 - x0, 1):.1f}" height="18" fill="{GOOD if ok else BAD}"/>')
    if mark is not None:
        parts.append(f'<line class="pass-mark" x1="{x(mark):.1f}" x2="{x(mark):.1f}" '
                     f'y1="{top + 18}" y2="{top + 44}" stroke="{MARK}" stroke-width="2" '
                     f'stroke-dasharray="4 3"/>')
    parts.append("</g>")
    return "".join(parts)


def curve_svg(curve: dict, top: float) -> str:
    """One curve over its iterations, with its range written at the axis."""
    ys = [_num(y) for y in curve.get("y") or []]
    points = [(i, y) for i, y in enumerate(ys) if y is not None]
    name = escape(str(curve.get("name", "")))
    parts = [f'<g class="curve-panel"><text x="{LEFT}" y="{top + 14}" font-size="13" '
             f'fill="{MARK}">{name}</text>']
    if len(points) >= 2:
        lo = min(y for _, y in points)
        hi = max(y for _, y in points)
        span = (hi - lo) or 1.0
        x_left, x_right, y_top, y_bottom = LEFT + 48, WIDTH - RIGHT, top + 24, top + CURVE_H - 22
        n = max(len(ys) - 1, 1)
        coords = " ".join(f"{x_left + (x_right - x_left) * i / n:.1f},"
                          f"{y_bottom - (y_bottom - y_top) * (y - lo) / span:.1f}"
                          for i, y in points)
        parts += [f'<rect x="{x_left}" y="{y_top}" width="{x_right - x_left}" '
                  f'height="{y_bottom - y_top}" fill="#f7f8fb" stroke="#d8dce6"/>',
                  f'<polyline class="curve" fill="none" stroke="#3b6ea8" stroke-width="2" '
                  f'points="{coords}"/>',
                  f'<text x="{x_left - 4}" y="{y_top + 10}" font-size="11" text-anchor="end" '
                  f'fill="{INK}">{_fmt(hi)}</text>',
                  f'<text x="{x_left - 4}" y="{y_bottom}" font-size="11" text-anchor="end" '
                  f'fill="{INK}">{_fmt(lo)}</text>',
                  f'<text x="{(x_left + x_right) / 2:.0f}" y="{y_bottom + 16}" font-size="11" '
                  f'text-anchor="middle" fill="{INK}">'
                  f'{escape(str(curve.get("x_label", "iteration")))} (1–{len(ys)})</text>']
    else:
        parts.append(f'<text x="{LEFT}" y="{top + 40}" font-size="12" fill="{INK}">'
                     "no values were recorded</text>")
    parts.append("</g>")
    return "".join(parts)


def training_svg(record: dict) -> str:
    """The whole record as one ``<svg>`` element (a string of escaped markup)."""
    from markupsafe import Markup

    metrics = [m for m in record.get("metrics") or [] if isinstance(m, dict)][:4]
    curves = [c for c in record.get("curves") or [] if isinstance(c, dict)][:3]
    height = len(metrics) * METRIC_H + len(curves) * CURVE_H + 8
    body, top = [], 4.0
    for m in metrics:
        body.append(metric_svg(m, top))
        top += METRIC_H
    for c in curves:
        body.append(curve_svg(c, top))
        top += CURVE_H
    label = "; ".join(f"{m.get('name', '')}: {_fmt(_num(m.get('value')))}" for m in metrics)
    return Markup(f'<svg class="training-plot" '
                  f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
                  f'role="img" aria-label="{escape("your training run: " + label)}">'
                  + "".join(body) + "</svg>")
