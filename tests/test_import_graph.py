"""The ``autograder`` package's imports form no cycle, counting imports inside functions too;
nor do the assignment packages (``assignments/NAME/``, imported by ``autograder.plugins`` as
``autograder_assignments.NAME``) with it.

A lazy import that closes a cycle still couples two modules both ways; the rule is that data
and imports flow one way. The graph is read from the source with ``ast`` (nothing is imported).
Imports under ``if TYPE_CHECKING:`` are left out: they never run, they only name types.
"""
from __future__ import annotations

import ast
from pathlib import Path

from autograder import ASSIGNMENTS_DIR, REPO_ROOT
from autograder.plugins import package_name

PACKAGE = REPO_ROOT / "autograder"


def module_name(path: Path, root: Path = REPO_ROOT, prefix: tuple[str, ...] = ()) -> str:
    parts = prefix + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """The kit's modules, and each assignment folder's under its package name."""
    found = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
             if "__pycache__" not in p.parts}
    for folder in sorted((REPO_ROOT / ASSIGNMENTS_DIR).iterdir()):
        if folder.is_dir():
            prefix = tuple(package_name(folder.name).split("."))
            found.update({module_name(p, folder, prefix): p for p in sorted(folder.rglob("*.py"))
                          if "__pycache__" not in p.parts})
    return found


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in (``a.b.c`` -> ``a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every kit module ``name`` imports, at any depth of its code (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            hit = resolve(t, known)
            while hit:            # importing a.b.c runs a/__init__ and a/b/__init__ first
                if hit != name and not name.startswith(hit + "."):
                    found.add(hit)
                hit = resolve(hit.rpartition(".")[0], known)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_are_counted(tmp_path):
    known = {"autograder.x": tmp_path / "x.py", "autograder.y": tmp_path / "y.py"}
    known["autograder.x"].write_text("def f():\n    from autograder.y import g\n")
    known["autograder.y"].write_text("from . import x\n")
    assert imports_of("autograder.x", known["autograder.x"], known) == {"autograder.y"}
    known["autograder.p"] = tmp_path / "p.py"                  # a parent package is run too
    known["autograder.p.q"] = tmp_path / "q.py"
    known["autograder.x"].write_text("import autograder.p.q\n")
    assert imports_of("autograder.x", known["autograder.x"], known) == {"autograder.p",
                                                                         "autograder.p.q"}
    assert imports_of("autograder.y", known["autograder.y"], known) == {"autograder.x"}


def test_the_assignment_packages_are_in_the_graph():
    graph = import_graph()
    training = package_name("ppo_lm") + ".training"
    assert package_name("ppo") + ".trainers.bandit" in graph
    assert "autograder.training_support" in graph[training]     # absolute, into the kit
    assert package_name("ppo_lm") + ".hidden_inputs" in \
        graph[package_name("ppo_lm") + ".test_masked_mean"]      # relative, in the folder


def test_the_autograder_package_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles (each a set of modules importing each other):\n" + \
        "\n".join(" <-> ".join(c) for c in found)
