"""Hint precision: how often a catalogued hint is shown for a mistake that is not catalogued.

``python -m autograder.suites.hint_precision [--per-function N]`` perturbs the answer key's
solution cells at random (a numeric constant changed, an arithmetic or comparison operator
swapped, a minus sign dropped, an index or slice bound moved by one: every single change of the
function, then random pairs of changes, drawn with a fixed seed), keeps the perturbations that
are not catalogued mistakes, grades each as a submission, and counts the failed tests whose
message names a catalogued mistake. That count must be 0 (``tests/grade/test_hint_precision.py``).

"Not catalogued" is decided by behaviour, not by text: in one trusted worker with the answer key
and the mutants, a perturbation is called on a battery of inputs (the suites' hint probes in
float32 and float64, with default and other keyword arguments, gradients included); one that
matches the answer key everywhere changes nothing and is dropped, one that matches a mutant
everywhere *is* that catalogued mistake and is dropped too.

Grading is the suites' own unit tests (the training questions cannot show a hint) run in this
process with one worker pool: each perturbation is graded like any submission, the reference
worker loaded once per assignment.
"""
from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from autograder import REPO_ROOT
from autograder.hints import (HINT_PREFIX, MUTANT_PREFIX, apply_mutant, load_mutants,
                              load_probes, mutant_cells, solution_cell, wrap_as)
from autograder.suites import mutant_corpus

SEED = 13
PERTURB_PREFIX = "_perturbed_"
SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
        ast.Pow: ast.Mult, ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE,
        ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}


# --- perturbing a solution cell ----------------------------------------------------------------

def _index_shift(node: ast.expr, delta: int) -> ast.expr:
    op = ast.Add() if delta > 0 else ast.Sub()
    return ast.BinOp(left=node, op=op, right=ast.Constant(abs(delta)))


def _variants(node: ast.AST) -> list[tuple[str, object]]:
    """(label, how) for every perturbation of one node; ``how(node) -> new node``."""
    out: list[tuple[str, object]] = []
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        v = node.value
        out.append((f"constant {v!r} -> {v + 1!r}", lambda n: ast.Constant(n.value + 1)))
        if v:
            out.append((f"constant {v!r} -> {2 * v!r}", lambda n: ast.Constant(2 * n.value)))
    elif isinstance(node, ast.BinOp) and type(node.op) in SWAP:
        for new in {SWAP[type(node.op)], ast.Mult if type(node.op) is not ast.Mult else ast.Add}:
            out.append((f"operator {type(node.op).__name__} -> {new.__name__}",
                        lambda n, new=new: ast.BinOp(n.left, new(), n.right)))
    elif isinstance(node, ast.Compare) and type(node.ops[0]) in SWAP:
        new = SWAP[type(node.ops[0])]
        out.append((f"comparison {type(node.ops[0]).__name__} -> {new.__name__}",
                    lambda n, new=new: ast.Compare(n.left, [new()] + n.ops[1:], n.comparators)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        out.append(("minus sign dropped", lambda n: n.operand))
    elif isinstance(node, ast.Subscript):
        index = node.slice
        if isinstance(index, ast.Tuple) and index.elts and \
                not isinstance(index.elts[-1], ast.Slice):
            for d in (1, -1):
                out.append((f"last index moved by {d:+d}", lambda n, d=d: ast.Subscript(
                    n.value, ast.Tuple(n.slice.elts[:-1] + [_index_shift(n.slice.elts[-1], d)],
                                       ast.Load()), n.ctx)))
        elif isinstance(index, ast.Slice):
            for d in (1, -1):
                if index.upper is not None:
                    out.append((f"slice end moved by {d:+d}", lambda n, d=d: ast.Subscript(
                        n.value, ast.Slice(n.slice.lower, _index_shift(n.slice.upper, d),
                                           n.slice.step), n.ctx)))
        elif not isinstance(index, ast.Tuple):
            for d in (1, -1):
                out.append((f"index moved by {d:+d}", lambda n, d=d: ast.Subscript(
                    n.value, _index_shift(n.slice, d), n.ctx)))
    return out


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _sites(tree: ast.Module, function: str) -> list[int]:
    """Positions (in ``ast.walk`` order of the function, docstring left out) that can change."""
    fn = _function(tree, function)
    body = fn.body[1:] if fn.body and isinstance(fn.body[0], ast.Expr) and \
        isinstance(getattr(fn.body[0], "value", None), ast.Constant) else fn.body
    keep = {id(n) for stmt in body for n in ast.walk(stmt)}
    return [i for i, n in enumerate(ast.walk(fn)) if id(n) in keep and _variants(n)]


def _swap(fn: ast.FunctionDef, target: ast.AST, how) -> None:
    for parent in ast.walk(fn):
        for field, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, field, how(target))
                return
            if isinstance(value, list) and any(v is target for v in value):
                setattr(parent, field, [how(v) if v is target else v for v in value])
                return
    raise LookupError(target)


def _apply(tree: ast.Module, function: str, changes) -> ast.Module:
    """A copy of ``tree`` with each ``(position, how)`` applied to the node at that position
    (positions in the original's ``ast.walk`` order of the function)."""
    tree = copy.deepcopy(tree)
    fn = _function(tree, function)
    nodes = list(ast.walk(fn))
    for target, how in [(nodes[p], how) for p, how in changes]:
        _swap(fn, target, how)
    return ast.fix_missing_locations(tree)


def perturbations(source: str, function: str, rng: random.Random,
                  limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` (label, cell source) perturbations of the cell: every single change
    (in random order), then random pairs of changes at two different sites; each compiles and
    differs from the others."""
    tree = ast.parse(source)
    nodes = list(ast.walk(_function(tree, function)))
    options = [(position, label, how) for position in _sites(tree, function)
               for label, how in _variants(nodes[position])]
    rng.shuffle(options)
    plans = [[o] for o in options]
    for _ in range(4 * limit):
        a, b = rng.sample(options, 2) if len(options) > 1 else (None, None)
        if a is not None and a[0] != b[0]:
            plans.append(sorted([a, b], key=lambda o: -o[0]))
    out, seen = [], {ast.dump(tree)}
    for plan in plans:
        if len(out) >= limit:
            break
        try:
            changed_tree = _apply(tree, function, [(p, how) for p, _, how in plan])
            changed = ast.unparse(changed_tree)
            compile(changed, "<perturbed>", "exec")
        except (SyntaxError, ValueError, LookupError, TypeError):
            continue
        if ast.dump(changed_tree) in seen:
            continue
        seen.add(ast.dump(changed_tree))
        label = "; ".join(f"line {getattr(nodes[p], 'lineno', 0)}: {lab}" for p, lab, _ in plan)
        out.append((f"{function}: {label}", changed))
    return out


# --- dropping perturbations that change nothing or are catalogued -------------------------------

def templates(assignment_name: str) -> dict:
    """{function: [(args, kwargs)]}: the forms of input the battery's probes follow."""
    from autograder.proxy import LogSoftmaxGather, Tensor

    def t(shape, dtype, name=None, grad=False):
        return Tensor(np.zeros(shape, dtype), requires_grad=grad, name=name)

    out: dict[str, list] = {}
    for dtype in (np.float32, np.float64):
        if assignment_name == "ppo":
            forms = {
                "reinforce_loss": [((LogSoftmaxGather(t(5, dtype, "logits", True), 0),
                                     t(3, dtype)), {})],
                "compute_gae": [((t(3, dtype), t(4, dtype)), kw)
                                for kw in ({}, {"gamma": 0.9, "lam": 0.7})],
                "ppo_combined_loss": [((t(3, dtype, "lp_new", True), t(3, dtype), t(3, dtype),
                                        t(3, dtype, "values", True), t(3, dtype)), kw)
                                      for kw in ({}, {"epsilon": 0.1, "vf_coeff": 2.0})],
            }
        else:
            mask = t((2, 3), dtype)
            forms = {
                "per_token_rewards": [((t((2, 3), dtype), t((2, 3), dtype), t(2, dtype), mask),
                                       kw) for kw in ({}, {"kl_coef": 0.3})],
                "masked_mean": [((t((2, 3), dtype, "x", True), mask), {})],
                "compute_token_gae": [((t((2, 3), dtype), t((2, 3), dtype), mask), kw)
                                      for kw in ({}, {"gamma": 0.9, "lam": 0.7})],
                "token_ppo_loss": [((t((2, 3), dtype, "lp_new", True), t((2, 3), dtype),
                                     t((2, 3), dtype), t((2, 3), dtype, "values", True),
                                     t((2, 3), dtype), mask), kw)
                                   for kw in ({}, {"epsilon": 0.1, "vf_coeff": 2.0})],
            }
        for fn, items in forms.items():
            out.setdefault(fn, []).extend(items)
    return out


def _backward(args):
    from autograder.proxy import Backward, LogSoftmaxGather, Tensor

    leaves = [a.logits.name if isinstance(a, LogSoftmaxGather) else a.name for a in args
              if isinstance(a, (Tensor, LogSoftmaxGather)) and
              (a.logits.requires_grad if isinstance(a, LogSoftmaxGather) else a.requires_grad)]
    if not leaves:
        return None
    return Backward(output=0 if len(args) >= 5 else None, wrt=leaves)


def _signature(proxy, name, args, kwargs, backward):
    """Everything a call shows (value, types, dtypes, changed inputs, gradients), or the
    error type; comparable with ``_alike``."""
    from autograder import proxy as proxies

    try:
        got = proxy.call(name, *args, backward=backward, **kwargs)
    except proxies.StudentError as exc:
        return ("error", exc.type)
    return got


def _alike(a, b) -> bool:
    from autograder.hints import _same

    if isinstance(a, tuple) or isinstance(b, tuple):
        return a == b
    return all(_same(a, b, aspect, 0 if isinstance(a.value, tuple) else None, 1e-6)
               for aspect in ("value", "type", "dtype", "shape", "mutated")) and \
        all(_same(a, b, f"grad:{k}", None, 1e-6) for k in set(a.grads) | set(b.grads))


def behaviourally_new(assignment, candidates: list[tuple[str, str, str]], pool
                      ) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """The candidates ``(function, label, source)`` that differ from the answer key and from
    every mutant of their function on the battery; with the counts dropped for each reason."""
    from autograder.config import load_settings
    from autograder.grade.submission import check_reference, reference_cells
    from autograder.load.extract import extract_definitions
    from autograder.proxy import StudentProxy
    from autograder.sandbox.client import Worker

    cells = reference_cells(assignment) + mutant_cells(assignment)
    for i, (fn, _, source) in enumerate(candidates):
        cells.append({"id": f"perturbed:{i}", "source": wrap_as(
            extract_definitions(source).code, fn, f"{PERTURB_PREFIX}{i}")})
    worker = Worker(load_settings(REPO_ROOT).limits, backend="trusted", device="cpu",
                    trusted=True)
    kept, dropped = [], {"no effect": 0, "a catalogued mistake": 0, "does not load": 0}
    try:
        worker.start()
        reply = worker.load(cells)
        broken = {e.get("cell") for e in reply.get("cell_errors") or []}
        if broken - {f"perturbed:{i}" for i in range(len(candidates))}:
            check_reference(reply)
        proxy = StudentProxy(worker)
        probes, forms = load_probes(assignment), templates(assignment.name)
        rng = np.random.default_rng(SEED)
        battery = {fn: [p for args, kw in forms[fn] for p in probes[fn](rng, args, kw)]
                   for fn in forms}
        mutants = load_mutants(assignment)
        cache: dict = {}

        def sig(name, fn, k):
            key = (name, k)
            if key not in cache:
                args, kw = battery[fn][k]
                cache[key] = _signature(proxy, name, args, kw, _backward(args))
            return cache[key]

        for i, (fn, label, source) in enumerate(candidates):
            name = f"{PERTURB_PREFIX}{i}"
            if f"perturbed:{i}" in broken or name not in proxy.defined:
                dropped["does not load"] += 1
                continue
            mine = [sig(name, fn, k) for k in range(len(battery[fn]))]
            if all(_alike(m, sig(fn, fn, k)) for k, m in enumerate(mine)):
                dropped["no effect"] += 1
                continue
            if any(all(_alike(m, sig(MUTANT_PREFIX + mu.name, fn, k))
                       for k, m in enumerate(mine))
                   for mu in mutants if mu.function == fn):
                dropped["a catalogued mistake"] += 1
                continue
            kept.append((fn, label, source))
    finally:
        worker.close()
    return kept, dropped


# --- grading the unit questions ----------------------------------------------------------------

def unit_suite(assignment, directory: Path):
    """The assignment with a folder holding its unit tests only (no training question: training
    shows no hints), beside the same mutants and hidden inputs."""
    src = Path(assignment.folder)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("__init__.py", "hidden_inputs.py", "mutants.py"):
        shutil.copy(src / name, directory / name)
    for fn in assignment.solution_functions.values():
        shutil.copy(src / f"test_{fn}.py", directory / f"test_{fn}.py")
    return dataclasses.replace(assignment, folder=directory)


def grade_units(assignment, path: Path, settings, pool, backend: str) -> list:
    """The unit tests' outcomes for the notebook at ``path``."""
    from autograder.grade.plugin import SuiteContext
    from autograder.grade.runner import run_suite
    from autograder.grade.submission import Session
    from autograder.hints import Hints
    from autograder.load.notebook import read_submission

    submission = read_submission(path, assignment)
    with Session(assignment, submission, settings, device="cpu", backend=backend,
                 hints_factory=Hints.for_assignment, pool=pool) as session:
        ctx = SuiteContext(assignment=assignment, student_proxy=session.student,
                           reference_proxy=session.reference, hints=session.hints,
                           cohort_seed=settings.cohort_seed, student_id=path.stem,
                           device=session.actual_device)
        return run_suite(ctx)


@dataclasses.dataclass
class Report:
    generated: int = 0
    dropped: dict = dataclasses.field(default_factory=dict)
    graded: int = 0
    failing: int = 0                 # graded perturbations that failed at least one unit test
    failed_tests: int = 0
    hints: list = dataclasses.field(default_factory=list)    # (perturbation, test, message)
    seconds: float = 0.0

    def text(self) -> str:
        dropped = ", ".join(f"{n} {k}" for k, n in self.dropped.items() if n)
        lines = [f"perturbations generated: {self.generated} (dropped: {dropped or 'none'})",
                 f"graded: {self.graded}; {self.failing} lose points on at least one unit test, "
                 f"{self.failed_tests} failed tests in all",
                 f"catalogued hints shown: {len(self.hints)} (must be 0)"]
        lines += [f"  {p}: {t}: {m[:200]}" for p, t, m in self.hints]
        lines.append(f"({self.seconds:.0f} s)")
        return "\n".join(lines)


def measure(per_function: int = 60, assignments=("ppo", "ppo_lm")) -> Report:
    from autograder.assignments import load_assignment
    from autograder.config import load_settings
    from autograder.grade.pool import WorkerPool
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend

    started = time.monotonic()
    settings = load_settings(REPO_ROOT)
    try:
        backend = resolve_backend(settings.sandbox)
    except BackendUnavailable:
        backend = "unsafe"
    report = Report()
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="hint-precision-") as tmp, \
            WorkerPool(settings) as pool:
        for name in assignments:
            full = load_assignment(name, REPO_ROOT)
            assignment = unit_suite(full, Path(tmp) / f"suite-{name}")
            catalogued = {ast.dump(ast.parse(apply_mutant(
                solution_cell(full, m.function).source, m))) for m in load_mutants(full)}
            candidates = []
            for fn in full.solution_functions.values():
                for label, source in perturbations(solution_cell(full, fn).source, fn, rng,
                                                   per_function):
                    report.generated += 1
                    if ast.dump(ast.parse(source)) in catalogued:
                        report.dropped["a catalogued mistake"] = \
                            report.dropped.get("a catalogued mistake", 0) + 1
                        continue
                    candidates.append((fn, label, source))
            kept, dropped = behaviourally_new(full, candidates, pool)
            for k, n in dropped.items():
                report.dropped[k] = report.dropped.get(k, 0) + n
            for i, (fn, label, source) in enumerate(kept):
                path = Path(tmp) / f"{name}-{i}.ipynb"
                path.write_text(json.dumps(mutant_corpus.submission_notebook(full,
                                                                             {fn: source})))
                outcomes = grade_units(assignment, path, settings, pool, backend)
                report.graded += 1
                failed = [o for o in outcomes if not o.passed]
                report.failing += bool(failed)
                report.failed_tests += len(failed)
                report.hints += [(label, o.title, o.message) for o in failed
                                 if HINT_PREFIX in o.message]
    report.seconds = time.monotonic() - started
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-function", type=int, default=60,
                        help="perturbations drawn per solution function (default 60)")
    args = parser.parse_args(argv)
    report = measure(args.per_function)
    print(report.text())
    return 0 if not report.hints else 1


if __name__ == "__main__":
    sys.exit(main())
