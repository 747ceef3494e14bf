"""Where an assignment's own code lives, and the one way to import it.

An assignment NAME is its answer key ``source/NAME/NAME.ipynb`` plus one folder
``assignments/NAME/`` holding all of its own code and data (the hidden suite, its hidden inputs,
the training helpers, the trusted trainers, the mutant catalogue, the calibration, the
thresholds, the demo recipe; see README, Layout, and docs/adding-an-assignment.md). Never under
``source/NAME/``: nbgrader copies every file there into the students' release.

Lookup (``assignment_folder``): ``<course_dir>/assignments/NAME/`` when it exists, else the kit's
own ``<kit root>/assignments/NAME/`` (the kit ships ``ppo`` and ``ppo_lm``; in the kit's checkout
the course directory and the kit root are the same directory).

Loading (``load_package``, ``load_module``): the folder is imported as the package
``autograder_assignments.NAME`` (``ASSIGNMENT_NAMESPACE``), its ``__path__`` the folder, so the
modules inside it import each other relatively (``from . import training as T``) and the kit's
generic code absolutely (``from autograder.proxy import ...``). The rule that keeps folders
apart: the package's name is a function of the folder, never of the name alone. The kit's own
``assignments/NAME/`` is ``autograder_assignments.NAME``; any other folder of that name (a
course's own, a trimmed copy a tool grades against) is ``autograder_assignments.NAME_<hash of
its path>``. So two folders of one name loaded in one process never replace or mix each other's
modules, whatever the order they are loaded in.
Everything that imports an assignment's code (the suite runner, hints, the mutant corpus, the
calibration, the trusted worker's trainers, the tests) goes through these functions.

Trust: the folder is instructor-only; only the trusted side imports it. The student's worker
never sees it: the sandbox binds and the Gradescope lock-down open the kit's runtime only
(``autograder.sandbox.backends.runtime_paths()``, an allow-list), and the fallback's exposure
check counts the course's ``assignments/`` (``backends.SENSITIVE``) and everything of the kit
outside the runtime.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path

from autograder import ASSIGNMENTS_DIR, REPO_ROOT

ASSIGNMENT_NAMESPACE = "autograder_assignments"
KIT_ROOT = REPO_ROOT
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def assignment_folder(name: str, course_dir: str | Path | None = None) -> Path | None:
    """``<course_dir>/assignments/NAME/`` if it is a folder, else the kit's own
    ``<kit root>/assignments/NAME/`` if it is one, else None."""
    if not isinstance(name, str) or not _NAME.match(name):
        return None
    roots = ([Path(course_dir)] if course_dir is not None else []) + [KIT_ROOT]
    for root in roots:
        folder = root / ASSIGNMENTS_DIR / name
        if folder.is_dir():
            return folder.resolve()
    return None


def package_name(name: str, folder: str | Path | None = None) -> str:
    """The import name of assignment ``name``'s folder ``folder``: ``autograder_assignments.
    <name>`` for the kit's own folder (and when ``folder`` is None), ``autograder_assignments.
    <name>_<hash of the folder's path>`` for any other."""
    base = f"{ASSIGNMENT_NAMESPACE}.{_identifier(name)}"
    if folder is None:
        return base
    resolved = Path(folder).resolve()
    if resolved == (KIT_ROOT / ASSIGNMENTS_DIR / name).resolve():
        return base
    return f"{base}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"


def load_package(name: str, folder: str | Path) -> types.ModuleType:
    """The assignment's folder imported as its package (``package_name(name, folder)``)."""
    folder = Path(folder).resolve()
    full = package_name(name, folder)
    loaded = sys.modules.get(full)
    if loaded is not None:
        return loaded
    _namespace()
    init = folder / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(full, init,
                                                      submodule_search_locations=[str(folder)])
    else:                        # a folder without __init__.py: an empty package
        spec = importlib.util.spec_from_loader(full, None, is_package=True)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    if not init.is_file():
        module.__path__ = [str(folder)]
        spec.submodule_search_locations = [str(folder)]
    sys.modules[full] = module
    try:
        if spec.loader is not None:
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(full, None)
        raise
    return module


def load_module(name: str, folder: str | Path, module: str) -> types.ModuleType:
    """The module ``module`` (dotted, relative to the folder: ``"training"``,
    ``"trainers.bandit"``) of assignment ``name``'s folder."""
    if not _MODULE.match(module):
        raise ValueError(f"not a module name: {module!r}")
    load_package(name, folder)
    return importlib.import_module(f"{package_name(name, folder)}.{module}")


def module_of(name: str, module: str, course_dir: str | Path | None = None) -> types.ModuleType:
    """``load_module`` of assignment ``name``, its folder looked up (``assignment_folder``)."""
    folder = assignment_folder(name, course_dir)
    if folder is None:
        raise ModuleNotFoundError(f"no assignment folder assignments/{name}/")
    return load_module(name, folder, module)


def assignment_module(assignment, module: str) -> types.ModuleType:
    """``load_module`` for an ``autograder.assignments.Assignment``."""
    return load_module(assignment.name, assignment.folder, module)


def has_module(assignment, module: str) -> bool:
    """Whether the assignment's folder has ``<module>.py`` (dotted names are subfolders)."""
    return (Path(assignment.folder) / (module.replace(".", "/") + ".py")).is_file()


def _identifier(name: str) -> str:
    """An assignment name as one import-name component (``-`` and ``.`` become ``_``)."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return ident if not ident[0].isdigit() else f"_{ident}"


def _namespace() -> types.ModuleType:
    """The kit-owned parent package of every assignment package (no files of its own)."""
    ns = sys.modules.get(ASSIGNMENT_NAMESPACE)
    if ns is None:
        ns = types.ModuleType(ASSIGNMENT_NAMESPACE, "The kit's assignment packages.")
        ns.__path__ = []
        sys.modules[ASSIGNMENT_NAMESPACE] = ns
    return ns
