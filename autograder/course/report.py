"""The cohort report: ``reports/<assignment>/index.html``, one self-contained file.

It answers "which concept did this class struggle with?": the weakest question is named in a
sentence at the top, then the score histogram, the pass rate per question and per test, the most
common mistakes (failed tests grouped by their message, numbers masked) and the flagged
submissions. Submissions that could not be read or hit a grader error count in the histogram but
not in the per-question statistics. A question left as the release's stub counts as not
attempted (``kinds.attempted``) in every statistic: the per-question table, its chart, the
per-test rates and the mistakes. The charts are PNGs inlined as data URIs, in the table's order.
"""
from __future__ import annotations

import base64
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from autograder.course.feedback import environment
from autograder.course.kinds import attempted, cell_of, is_flagged, kind, unattempted_cells
from autograder.points import fmt_percent, fmt_points
from autograder.results import GradingResult, write_atomic

HINT = re.compile(r"(?:known mistake|Hint)\s*:\s*(.+)", re.S | re.I)
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass
class Cohort:
    """Every result of one assignment, and the statistics the report shows."""
    assignment: str
    results: dict[str, GradingResult]               # student -> result
    max_score: float = 0.0
    counted: list[str] = field(default_factory=list)   # students in the per-question stats

    @classmethod
    def load(cls, autograded: Path, assignment: str) -> "Cohort":
        results = {}
        for path in sorted(autograded.glob(f"*/{assignment}/results.json")):
            try:      # a damaged or unreadable file is left out; the others make the report
                results[path.parent.parent.name] = GradingResult.read(path)
            except (OSError, ValueError):
                continue
        cohort = cls(assignment, results)
        cohort.max_score = max((r.details.max_score for r in results.values()), default=0.0)
        cohort.counted = [s for s, r in results.items() if kind(r) == "graded"]
        return cohort

    def scores(self) -> list[float]:
        return [r.score for r in self.results.values()]

    def questions(self) -> list[dict]:
        """Per grade cell, over the submissions that attempted it: the mean fraction of its
        points and how many got full credit; ``skipped`` counts those that did not."""
        cells: dict[str, dict] = {}
        for s in self.counted:
            tests = self.results[s].tests
            for cell, v in cell_totals(self.results[s]).items():
                q = cells.setdefault(cell, {"cell": cell, "fractions": [], "full": 0,
                                            "skipped": 0, "max_score": v["max_score"]})
                if not attempted([t for t in tests if cell_of(t) == cell]):
                    q["skipped"] += 1
                    continue
                frac = v["score"] / v["max_score"] if v["max_score"] else 1.0
                q["fractions"].append(frac)
                q["full"] += frac >= 1 - 1e-9
        for q in cells.values():
            n = q["n"] = len(q["fractions"])
            q["mean"] = sum(q["fractions"]) / n if n else None
            q["full_rate"] = q["full"] / n if n else None
        return list(cells.values())

    def ranked_questions(self) -> list[dict]:
        """The questions weakest first (lowest mean share of points), those nobody attempted
        last: the order of the report's question table and of its chart."""
        return sorted(self.questions(), key=lambda q: (q["mean"] is None, q["mean"] or 0.0,
                                                       q["full_rate"] or 0.0, q["cell"]))

    def tests(self) -> list[dict]:
        """Per test name, in suite order: pass rate over the counted submissions that attempted
        its question (the same rule as ``questions``); ``rate`` is None when none did."""
        rows: dict[str, dict] = {}
        for s in self.counted:
            skipped = unattempted_cells(self.results[s])
            for t in self.results[s].tests:
                r = rows.setdefault(t.name, {"name": t.name, "passed": 0, "n": 0,
                                             "skipped": 0, "cell": cell_of(t)})
                if r["cell"] in skipped:
                    r["skipped"] += 1
                    continue
                r["n"] += 1
                r["passed"] += t.passed
        for r in rows.values():
            r["rate"] = r["passed"] / r["n"] if r["n"] else None
        return list(rows.values())

    def mistakes(self, limit: int = 12) -> list[dict]:
        """Failed tests grouped by the mistake they name, most students first.

        The key is the hint a failed test gave (the text after "known mistake:" or "Hint:"),
        else its test and message with the numbers masked. A student counts once per group,
        however many tests showed the mistake."""
        groups: dict[tuple[str, str], dict] = {}
        for s in self.counted:
            for t in self.results[s].tests:
                if t.passed or not attempted([t]):
                    continue
                text = t.output.strip()
                cell = cell_of(t)
                hint = HINT.search(text)
                key = (cell, " ".join(hint.group(1).split())) if hint else \
                    (t.name, " ".join(NUMBER.sub("#", text).split()))
                g = groups.setdefault(key, {"cell": cell, "example": text,
                                            "hint": hint.group(1).strip() if hint else "",
                                            "students": [], "tests": []})
                if s not in g["students"]:
                    g["students"].append(s)
                if t.name not in g["tests"]:
                    g["tests"].append(t.name)
        ranked = sorted(groups.values(), key=lambda g: (-len(g["students"]), -len(g["tests"]),
                                                        g["cell"], g["tests"][0]))
        return ranked[:limit]

    def flagged(self) -> list[dict]:
        rows = []
        for s, r in self.results.items():
            flags = [f for f in r.details.flags if f.code != "device_fallback"]
            if flags:
                rows.append({"student": s, "kind": kind(r), "flags": flags})
        return rows

    def identical(self) -> list[list[str]]:
        """Groups of students whose graded notebooks are byte-identical (scoring above 0, so a
        blank release handed in by several is not listed)."""
        groups: dict[str, list[str]] = defaultdict(list)
        for s in self.counted:
            r = self.results[s]
            sha = r.details.submission_sha256
            if sha and r.score > 0:
                groups[sha].append(s)
        return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g))

    def weakest(self) -> dict | None:
        """The question with the lowest mean share of points among those who attempted it."""
        qs = [q for q in self.ranked_questions() if q["n"]]
        return qs[0] if qs else None


def cell_totals(result: GradingResult) -> dict[str, dict[str, float]]:
    cells = result.details.grade_cells
    if cells:
        return cells
    totals: dict[str, dict[str, float]] = {}
    for t in result.tests:
        c = totals.setdefault(cell_of(t), {"score": 0.0, "max_score": 0.0})
        c["score"] += t.score
        c["max_score"] += t.max_score
    return totals


def headline(cohort: Cohort) -> str:
    """The one sentence at the top of the report."""
    weak = cohort.weakest()
    if weak is None:
        return f"No gradable submissions of {cohort.assignment} yet."
    sentence = (f"This class struggled most with {weak['cell']}: the {weak['n']} submissions "
                f"that attempted it earned {fmt_percent(weak['mean'])} of its points on average, "
                f"and {weak['full']} of {weak['n']} got it fully right.")
    top = next((m for m in cohort.mistakes(limit=1000) if m["cell"] == weak["cell"]), None)
    if top:
        sentence += (f" Most common mistake there ({len(top['students'])}×): "
                     f"{gist(top['hint'] or top['example'])}")
    return sentence


def gist(message: str, limit: int = 220) -> str:
    """A message on one line, cut at a sentence end near ``limit`` characters."""
    text = " ".join(message.split()) or "(no message)"
    if len(text) <= limit:
        return text
    cut = text.rfind(". ", 0, limit)
    return text[: cut + 1] if cut > limit // 3 else text[: limit - 1] + "…"


def histogram_png(cohort: Cohort) -> str:
    """The score histogram as a ``data:image/png;base64,...`` URI (inlined in the page)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    top = cohort.max_score or max(cohort.scores(), default=1.0) or 1.0
    ax.hist(cohort.scores(), bins=min(20, max(5, int(top) * 2)), range=(0, top),
            color="#3b6ea8", edgecolor="white")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"score (out of {fmt_points(top)})")
    ax.set_ylabel("submissions")
    ax.set_title(f"{cohort.assignment}: scores of {len(cohort.results)} submissions")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# Files the report wrote beside index.html before it was one file; removed when it is rebuilt.
OLD_PLOTS = ("score_histogram.png", "question_pass_rate.png", "test_pass_rate.png")


def write_report(autograded: Path, out: Path, assignment: str,
                 feedback_link=None) -> Path:
    """Build the report into ``out`` (``reports/<assignment>/``); returns the index.html path.

    ``feedback_link(student) -> relative URL`` links each student's feedback page."""
    cohort = Cohort.load(autograded, assignment)
    scores = cohort.scores()
    kinds = Counter(kind(r) for r in cohort.results.values())
    students = [{"student": s, "score": r.score, "kind": kind(r),
                 "flagged": is_flagged(r), "link": feedback_link(s) if feedback_link else ""}
                for s, r in cohort.results.items()]
    html = environment().get_template("report.html.j2").render(
        assignment=assignment, headline=headline(cohort), histogram=histogram_png(cohort),
        n=len(scores), counted=len(cohort.counted), kinds=kinds,
        mean=sum(scores) / len(scores) if scores else 0.0, max_score=cohort.max_score,
        questions=cohort.ranked_questions(),
        tests=cohort.tests(), mistakes=cohort.mistakes(), flagged=cohort.flagged(),
        identical=cohort.identical(),
        students=students)
    index = out / "index.html"
    write_atomic(index, html)
    for name in OLD_PLOTS:
        (out / name).unlink(missing_ok=True)
    return index
