"""A training test's run as plain, bounded data: ``tests[i].extra_data["training"]``.

A hidden training test (trusted side) records what it measured, so the student's feedback page
can draw their own run beside the pass mark. The record is built only from numbers the trusted
side computed or received as data, and its size is bounded whatever they are:

    {"metrics": [{"name": str, "value": float | None, "pass_mark": float | None,
                  "pass_if": "above" | "below"}],                      # at most MAX_METRICS
     "curves":  [{"name": str, "x_label": str, "y": [float | None]}]}  # at most MAX_CURVES,
                                                                       # MAX_POINTS points each
Non-finite numbers become None; names are cut to MAX_NAME characters; a longer curve is
thinned to MAX_POINTS evenly spaced points (first and last kept).
"""
from __future__ import annotations

import math
from typing import Sequence

MAX_METRICS = 4
MAX_CURVES = 3
MAX_POINTS = 200
MAX_NAME = 80


def _number(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if math.isfinite(v) else None


def _thin(ys: list, limit: int = MAX_POINTS) -> list:
    if len(ys) <= limit:
        return list(ys)
    step = (len(ys) - 1) / (limit - 1)
    return [ys[round(i * step)] for i in range(limit)]


def training_record(metrics: list[dict], curves: Sequence[dict] = ()) -> dict:
    """The bounded record (see the module docstring) from loosely typed input."""
    out_metrics = []
    for m in list(metrics)[:MAX_METRICS]:
        out_metrics.append({"name": str(m.get("name", ""))[:MAX_NAME],
                            "value": _number(m.get("value")),
                            "pass_mark": _number(m.get("pass_mark")),
                            "pass_if": "below" if m.get("pass_if") == "below" else "above"})
    out_curves = []
    for c in list(curves)[:MAX_CURVES]:
        ys = c.get("y") or []
        if not isinstance(ys, (list, tuple)):
            continue
        ys = _thin(list(ys[:100_000]))
        out_curves.append({"name": str(c.get("name", ""))[:MAX_NAME],
                           "x_label": str(c.get("x_label", "iteration"))[:MAX_NAME],
                           "y": [_number(y) for y in ys]})
    return {"metrics": out_metrics, "curves": out_curves}
