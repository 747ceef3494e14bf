"""Points as people read them: one split rule and one rounding rule for every page.

- ``split_points(points, weights)``: a grade cell's points over its checks, in proportion to the
  weights, each share a multiple of a readable quantum (quarters where there are enough of them,
  else tenths, twentieths, hundredths). The shares sum to ``points`` exactly (in quanta), and
  every check is worth at least one quantum.
- ``fmt_points(x)``: the only way points are printed (CLI table, feedback page, cohort report,
  the results' summary): rounded to ``PLACES`` decimals, trailing zeros dropped ("11", "10.96",
  "1.85", "0.25").
- ``fmt_percent(fraction)``: the only way a share is printed: a whole percent ("62%").
"""
from __future__ import annotations

import math

PLACES = 2                          # decimals of every printed score
QUANTA = (0.25, 0.1, 0.05, 0.01)    # readable shares of a point, preferred first


def split_points(points: float, weights: list[float]) -> list[float]:
    """``points`` split over checks with ``weights`` (all > 0); see the module docstring.

    Largest-remainder apportionment in units of the first quantum that divides ``points`` and
    gives every check at least one unit; when none does (odd points or hundreds of checks), the
    exact proportional shares."""
    n = len(weights)
    if n == 0:
        return []
    total = float(sum(weights))
    for quantum in QUANTA:
        units = points / quantum
        if abs(units - round(units)) < 1e-9 and round(units) >= n:  # noqa: RUF046
            shares = _apportion(int(round(units)), weights, total)
            return [round(s * quantum, 10) for s in shares]
    return [points * w / total for w in weights]


def _apportion(units: int, weights: list[float], total: float) -> list[int]:
    """``units`` whole units over ``weights``, at least one each (largest remainders first;
    ties go to the earlier check, so the split is deterministic)."""
    quotas = [units * w / total for w in weights]
    shares = [max(1, math.floor(q)) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - math.floor(quotas[i])), i))
    surplus = units - sum(shares)
    k = 0
    while surplus > 0:                      # hand out the rest by largest remainder
        shares[order[k % len(order)]] += 1
        surplus -= 1
        k += 1
    while surplus < 0:                      # the minimum of one unit overshot: take it back
        i = max((i for i in range(len(shares)) if shares[i] > 1),
                key=lambda i: (shares[i] - quotas[i], -i))
        shares[i] -= 1
        surplus += 1
    return shares


def fmt_points(x: float) -> str:
    """A score for people: ``PLACES`` decimals, trailing zeros dropped; never "-0"."""
    text = f"{float(x):.{PLACES}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def fmt_percent(fraction: float) -> str:
    """A share for people: a whole percent."""
    return f"{100 * float(fraction):.0f}%"
