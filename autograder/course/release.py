"""The notebook students get, as the trusted side reads it (``release/``, else made in memory
from the source as ``nbgrader generate_assignment`` makes it)."""
from __future__ import annotations

from pathlib import Path

from autograder.course.paths import CoursePaths


def read_nb(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def student_version(paths: CoursePaths, assignment: str):
    """The notebook students get: ``release/`` when generated, else made from the source the
    way ``nbgrader generate_assignment`` does (in memory)."""
    release = paths.release / assignment / paths.source_notebook(assignment).name
    if release.exists():
        return read_nb(release)
    from nbgrader.preprocessors import (ClearHiddenTests, ClearMarkScheme, ClearOutput,
                                        ClearSolutions, ComputeChecksums, LockCells)
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(paths.root)).load_config()
    nb = read_nb(paths.source_notebook(assignment))
    resources: dict = {}
    for step in (LockCells, ClearSolutions, ClearOutput, ComputeChecksums, ClearHiddenTests,
                 ClearMarkScheme, ComputeChecksums):
        nb, resources = step(config=config).preprocess(nb, resources)
    return nb
