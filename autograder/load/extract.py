"""Read one code cell for a worker: as written (``run_as_written``) or its definitions only
(``extract_definitions``).

Which cells get which (``autograder/load/notebook.py``): the student's own cells, the answer
key's solution cells and the given cells the source marks as set-up run as written; the other
given cells (training loops, plots, demos) contribute their definitions only.

``run_as_written(source)``: the whole cell, as Jupyter runs it, less what needs IPython. Shell
and magic lines (below) and top-level statements that use ``get_ipython`` become ``pass`` (or
blank lines), keeping every other line at its number; each is listed in ``magics`` as
``(line, text)``. ``names`` are all the names its top-level code binds (assignments, loops,
``with ... as``, imports, defs, classes), whether or not they run before an error.

``extract_definitions(source)``. Invariants:

- IPython syntax never reaches ``ast``: shell (``!cmd``, ``x = !cmd``), line magics (``%cmd``)
  and help (``obj?``, ``?obj``) lines become ``pass`` at the same indentation, so a magic inside a
  function body leaves the function valid. A cell magic (``%%bash``, ``%%writefile``, ...) drops
  the whole cell, except ``%%time``, ``%%timeit`` and ``%%capture``, whose body is plain Python
  and is read like any other cell (only their first line is dropped).
- Kept at top level: ``import``/``from ... import``, ``def``/``async def``, ``class``, and
  assignments of a simple value to plain names (``GAMMA = 0.99``, ``SIZES = (4, 8)``,
  ``EPS: float = 1e-8``, ``A, B = 1, 2``, ``DT = torch.float32``). A simple value is built only
  from literals, names, attribute access on names, unary/binary operators and
  tuple/list/set/dict displays: nothing that calls. Its names must already be bound by a kept
  statement (earlier in the cell, or in ``known``: the names earlier kept cells bind, see
  ``extract_cells``) or be builtins; otherwise it would only raise NameError, so it is dropped
  (``ratio = torch.linspace(...)`` is dropped, hence so is ``scaled = ratio * 2``).
  Everything else at top level is dropped (calls, loops, ``if``/``with``/``try`` blocks,
  ``env = ContextualBandit()``, ``print(...)``).
- Decorators are part of a definition and are kept as written (``@torch.no_grad()`` included):
  dropping one would silently change what the function computes. Decorators, default values and
  class bodies run when the definition runs, like everything else inside the sandboxed worker.
- Kept statements keep their line numbers: dropped lines become blank lines, so an error the
  worker reports at line N is line N of the student's cell.
- A cell that cannot be parsed yields ``error`` (``"SyntaxError at line N: msg"``) and no code.
"""
from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from typing import Iterable, cast

MAX_CELL_CHARS = 1_000_000
PYTHON_BODY_CELL_MAGICS = frozenset({"time", "timeit", "capture"})
BUILTIN_NAMES = frozenset(dir(builtins))
ANY_NAME = "*"        # in ``names``/``known``: a star import kept, so any name may be bound

_ASSIGN_MAGIC = re.compile(r"^\s*[A-Za-z_][\w.]*(\s*,\s*[A-Za-z_][\w.]*)*\s*=\s*[!%]")
_HELP = re.compile(r"^\s*(\?\??[\w.]*|[A-Za-z_][\w.]*\s*\?\??)\s*$")


@dataclass
class Extracted:
    code: str                     # the kept statements, original text, original line numbers
    dropped: list[str]            # "line N: what" for each dropped top-level statement / magic
    error: str | None = None      # "SyntaxError at line N: msg" when the cell cannot be parsed
    functions: tuple[str, ...] = field(default=())  # names of the top-level functions kept
    names: tuple[str, ...] = field(default=())      # every name the kept statements bind
    magics: tuple[tuple[int, str], ...] = field(default=())  # (line, text) not run: needs IPython


def extract_cells(sources: Iterable[str]) -> list[Extracted]:
    """``extract_definitions`` of consecutive cells run in one namespace: each cell's constants
    may use the names earlier cells' kept statements bind."""
    known: set[str] = set()
    out = []
    for source in sources:
        e = extract_definitions(source, known)
        known.update(e.names)
        out.append(e)
    return out


TOO_DEEP = "SyntaxError: this cell is nested too deeply to read"


def extract_definitions(source: str, known: Iterable[str] = ()) -> Extracted:
    """The definitions of one code cell; never raises for any input string. ``known``: names
    already bound when the cell runs (by earlier cells' kept statements)."""
    try:
        return _extract_definitions(source, known)
    except (RecursionError, MemoryError):    # e.g. a sum of thousands of terms: that cell only
        return Extracted("", [], TOO_DEEP)


def _extract_definitions(source: str, known: Iterable[str]) -> Extracted:
    parsed = parse_cell(source)
    if isinstance(parsed, Extracted):
        return parsed
    text, lines, tree, dropped, magics, magic_lines = parsed
    kept: list[ast.stmt] = []
    bound = set(known) | BUILTIN_NAMES
    names: list[str] = []
    for node in tree.body:
        if is_definition(node, bound):
            kept.append(node)
            new = bound_names(node)
            bound.update(new)
            names.extend(n for n in new if n not in names)
        elif not (isinstance(node, ast.Pass) and node.lineno in magic_lines):
            dropped.append(f"line {node.lineno}: {describe(node)}")
    dropped.sort(key=lambda d: int(d.split(":", 1)[0].removeprefix("line ")))
    code = place(text, lines, kept)
    functions = tuple(n.name for n in kept
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return Extracted(code, dropped, None, functions, tuple(names), tuple(magics))


def run_as_written(source: str) -> Extracted:
    """The whole cell as Jupyter runs it, less what needs IPython (see the module docstring);
    never raises for any input string. ``dropped`` lists the lines not run."""
    try:
        return _run_as_written(source)
    except (RecursionError, MemoryError):
        return Extracted("", [], TOO_DEEP)


def _run_as_written(source: str) -> Extracted:
    parsed = parse_cell(source)
    if isinstance(parsed, Extracted):
        return parsed
    text, lines, tree, dropped, magics, _ = parsed
    for node in reversed(ipython_statements(tree.body)):
        first = (ast.get_source_segment(text, node) or lines[node.lineno - 1]).split("\n")[0]
        first = first.strip()
        dropped.append(f"line {node.lineno}: {first[:60]} (uses get_ipython)")
        magics.append((node.lineno, first[:200]))
        blank_out(lines, node)
    magics.sort()
    dropped.sort(key=lambda d: int(d.split(":", 1)[0].removeprefix("line ")))
    code = "\n".join(lines).rstrip() + "\n" if any(line.strip() for line in lines) else ""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # not expected: run nothing
        return Extracted("", dropped, "SyntaxError: this cell could not be prepared to run",
                         magics=tuple(magics))
    functions = tuple(n.name for n in tree.body
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return Extracted(code, dropped, None, functions, tuple(top_level_bindings(tree.body)),
                     tuple(magics))


def parse_cell(source: str):
    """``(text, lines, tree, dropped, magics, magic_line_numbers)`` of a cell with its IPython
    lines replaced (``lines`` is ``text`` split), or an ``Extracted`` with nothing to run."""
    if not isinstance(source, str):
        return Extracted("", [], "this cell has no readable source text")
    if len(source) > MAX_CELL_CHARS:
        return Extracted("", [], f"this cell is too long to grade ({len(source):,} characters; "
                                 f"the limit is {MAX_CELL_CHARS:,})")
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    dropped: list[str] = []
    magics: list[tuple[int, str]] = []
    magic_lines = strip_ipython(lines, dropped, magics)
    if magic_lines is None:          # a cell magic that is not Python: the whole cell goes
        return Extracted("", dropped, magics=tuple(magics))
    text = "\n".join(lines)
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        where = f" at line {exc.lineno}" if exc.lineno else ""
        return Extracted("", dropped, f"{type(exc).__name__}{where}: {exc.msg}",
                         magics=tuple(magics))
    except ValueError as exc:                      # e.g. null bytes
        return Extracted("", dropped, f"SyntaxError: {exc}", magics=tuple(magics))
    except (RecursionError, MemoryError):
        return Extracted("", dropped, TOO_DEEP, magics=tuple(magics))
    return text, lines, tree, dropped, magics, magic_lines


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp,
           ast.SetComp, ast.DictComp, ast.GeneratorExp)


def uses_get_ipython(nodes) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "get_ipython"
               for node in nodes if node is not None for n in ast.walk(node))


def ipython_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements run at top level (not inside a def or class) that use ``get_ipython``,
    in source order: a simple statement whole, a compound one whole when its header uses it."""
    found: list[ast.stmt] = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        blocks = [getattr(node, f) for f in ("body", "orelse", "finalbody")
                  if isinstance(getattr(node, f, None), list)]
        blocks += [h.body for h in getattr(node, "handlers", [])]
        blocks += [c.body for c in getattr(node, "cases", [])]
        if not blocks:
            if uses_get_ipython([node]):
                found.append(node)
            continue
        header = [v for f, v in ast.iter_fields(node)
                  if f not in ("body", "orelse", "finalbody", "handlers", "cases")]
        header += [h.type for h in getattr(node, "handlers", [])]
        header += [c.pattern for c in getattr(node, "cases", [])] + \
                  [c.guard for c in getattr(node, "cases", [])]
        flat = [x for v in header for x in (v if isinstance(v, list) else [v])
                if isinstance(x, ast.AST)]
        if uses_get_ipython(flat):
            found.append(node)
        else:
            for block in blocks:
                found.extend(ipython_statements(block))
    return found


def blank_out(lines: list[str], node: ast.stmt) -> None:
    """Replace one statement's text by ``pass`` in place; every line keeps its number (the
    rest of its last line, e.g. ``; x = 1``, moves up to its first)."""
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    end = node.end_col_offset if node.end_col_offset is not None else len(lines[last].encode())
    head = lines[first].encode()[:node.col_offset].decode(errors="replace")
    tail = lines[last].encode()[end:].decode(errors="replace")
    lines[first] = head + "pass" + tail
    for i in range(first + 1, last + 1):
        lines[i] = ""


def top_level_bindings(body: list[ast.stmt]) -> list[str]:
    """Every name the cell's top-level code binds, in source order (``*`` for a star import);
    the bodies of defs, classes, lambdas and comprehensions are their own scopes."""
    names: list[str] = []
    stack: list[ast.AST] = list(reversed(body))
    while stack:                       # iterative: a cell may nest deeper than the stack allows
        node = stack.pop()
        found: list[str] = []
        children: list[ast.AST] = []
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found = bound_names(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found, children = [node.name], list(node.decorator_list)
        elif not isinstance(node, _SCOPES):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                found = [node.id]
            elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
                found = [node.name]
            elif isinstance(node, ast.MatchMapping) and node.rest:
                found = [node.rest]
            children = list(ast.iter_child_nodes(node))
        names.extend(n for n in found if n not in names)
        stack.extend(reversed(children))
    return names


def strip_ipython(lines: list[str], dropped: list[str],
                  magics: list[tuple[int, str]] | None = None) -> set[int] | None:
    """Replace IPython-only lines in place by ``pass``; return their 1-based numbers, or None
    when the cell is a non-Python cell magic (then ``lines`` is meaningless). Each goes to
    ``dropped`` ("line N: ...") and to ``magics`` as ``(N, text)``."""
    magics = [] if magics is None else magics
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        magic = lines[first].lstrip()[2:].split(maxsplit=1)
        name = magic[0] if magic else ""
        if name not in PYTHON_BODY_CELL_MAGICS:
            dropped.append(f"line {first + 1}: %%{name} cell magic (whole cell)")
            magics.append((first + 1, f"%%{name} (the whole cell)"))
            return None
        dropped.append(f"line {first + 1}: %%{name} (cell magic line)")
        magics.append((first + 1, lines[first].strip()[:200]))
        lines[first] = ""
    replaced: set[int] = set()
    depth, quote, continued, magic_continues = 0, None, False, False
    for i, line in enumerate(lines):
        starts_statement = depth == 0 and quote is None and not continued
        if magic_continues or (starts_statement and is_ipython_line(line)):
            if not magic_continues:
                dropped.append(f"line {i + 1}: {line.strip()[:60]} (shell/magic line)")
                magics.append((i + 1, line.strip()[:200]))
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = indent + "pass" if not magic_continues else ""
            replaced.add(i + 1)
            magic_continues = line.rstrip().endswith("\\")
            continued = False
            continue
        depth, quote, continued = scan(line, depth, quote)
    return replaced


def is_ipython_line(line: str) -> bool:
    stripped = line.lstrip()
    return (stripped.startswith(("!", "%")) or bool(_ASSIGN_MAGIC.match(line))
            or (("?" in stripped) and bool(_HELP.match(line))))


def scan(line: str, depth: int, quote: str | None) -> tuple[int, str | None, bool]:
    """Lexical state after ``line``: bracket depth, the open string's quote (if the string goes
    on to the next line) and backslash continuation. Enough to tell whether the next line starts
    a new statement."""
    i, n, comment = 0, len(line), False
    while i < n:
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 2
            elif line.startswith(quote, i):
                i += len(quote)
                quote = None
            else:
                i += 1
            continue
        if ch == "#":
            comment = True
            break
        if ch in "\"'":
            quote = ch * 3 if line.startswith(ch * 3, i) else ch
            i += len(quote)
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        i += 1
    if quote is not None:
        if len(quote) == 1 and not line.endswith("\\"):
            quote = None          # an unterminated one-line string: ast reports it
        return depth, quote, False
    return depth, None, not comment and line.endswith("\\")


def is_definition(node: ast.stmt, bound: set[str]) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                         ast.ClassDef)):
        return True
    if isinstance(node, ast.Assign):
        return all(is_plain_target(t) for t in node.targets) and is_simple_value(node.value, bound)
    if isinstance(node, ast.AnnAssign):
        return (isinstance(node.target, ast.Name) and node.value is not None
                and is_simple_value(node.value, bound) and is_simple_value(node.annotation, bound))
    return False


def bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [ANY_NAME if a.name == "*" else (a.asname or a.name.split(".")[0])
                for a in node.names]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    # is_definition keeps only these kinds: the other one with targets is an AnnAssign.
    targets = node.targets if isinstance(node, ast.Assign) else [cast(ast.AnnAssign, node).target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def is_plain_target(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return True
    return isinstance(node, (ast.Tuple, ast.List)) and \
        all(isinstance(e, ast.Name) for e in node.elts)


def is_simple_value(node: ast.expr | None, bound: set[str]) -> bool:
    """Literals and bound names combined without any call, subscript, comprehension or lambda."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id in bound or ANY_NAME in bound
    if isinstance(node, ast.Attribute):
        return not isinstance(node.value, ast.Constant) and is_simple_value(node.value, bound)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(is_simple_value(e, bound) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and is_simple_value(k, bound) for k in node.keys) and \
            all(is_simple_value(v, bound) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        return is_simple_value(node.operand, bound)
    if isinstance(node, ast.BinOp):
        return is_simple_value(node.left, bound) and is_simple_value(node.right, bound)
    return False


def describe(node: ast.stmt) -> str:
    """A few words on a dropped statement, for staff and students."""
    if isinstance(node, ast.Expr):
        if isinstance(node.value, ast.Call):
            return f"call {short(node.value.func)}(...)"
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return "string"
        return "expression"
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return "assignment to " + ", ".join(short(t) for t in targets) + \
            " (its value calls something or uses a name no kept statement binds)"
    words = {ast.For: "for loop", ast.AsyncFor: "for loop", ast.While: "while loop",
             ast.If: "if block", ast.With: "with block", ast.AsyncWith: "with block",
             ast.Try: "try block", ast.Delete: "del statement", ast.Assert: "assert",
             ast.Raise: "raise", ast.Global: "global statement", ast.Pass: "pass"}
    return words.get(type(node), type(node).__name__.lower() + " statement")


def short(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 40 else text[:37] + "..."


def place(text: str, lines: list[str], kept: list[ast.stmt]) -> str:
    """The kept statements' original text at their original line numbers; all else blank."""
    if not kept:
        return ""
    out = [""] * len(lines)
    for node in kept:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            # compound statements start a line and own every line up to their end
            out[first - 1: node.end_lineno] = lines[first - 1: node.end_lineno]
            continue
        segment = ast.get_source_segment(text, node) or ast.unparse(node)
        for k, part in enumerate(segment.split("\n")):
            row = node.lineno - 1 + k
            out[row] = f"{out[row]}; {part}" if (k == 0 and out[row].strip()) else part
    code = "\n".join(out).rstrip() + "\n"
    try:
        ast.parse(code)
    except SyntaxError:           # never expected; fall back to regenerated source
        code = "\n\n".join(ast.unparse(n) for n in kept) + "\n"
    return code
