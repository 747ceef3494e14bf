"""Where nbgrader's working trees live in a course directory (read from ``nbgrader_config.py``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CoursePaths:
    root: Path
    course_id: str
    source: Path
    release: Path
    submitted: Path
    autograded: Path
    feedback: Path
    reports: Path

    def results(self, student: str, assignment: str) -> Path:
        return self.autograded / student / assignment / "results.json"

    def feedback_html(self, student: str, assignment: str) -> Path:
        """The student's page, ``<notebook>.html``: the name nbgrader's ``release_feedback``
        and ``fetch_feedback`` look for."""
        page = f"{self.source_notebook(assignment).stem}.html"
        return self.feedback / student / assignment / page

    def autograded_notebook(self, student: str, assignment: str) -> Path:
        """``autograded/<student>/<assignment>/<notebook>.ipynb``, as nbgrader names it."""
        return self.autograded / student / assignment / self.source_notebook(assignment).name

    def report_dir(self, assignment: str) -> Path:
        return self.reports / assignment

    def source_notebook(self, assignment: str) -> Path:
        """The assignment's source notebook: ``<assignment>.ipynb``, else the only one."""
        folder = self.source / assignment
        named = folder / f"{assignment}.ipynb"
        if named.exists():
            return named
        found = sorted(folder.glob("*.ipynb"))
        if len(found) != 1:
            raise FileNotFoundError(f"no source notebook for {assignment!r} in {folder}")
        return found[0]


def course_paths(course_dir: str | Path) -> CoursePaths:
    """The directories nbgrader uses for this course, as ``nbgrader_config.py`` names them."""
    from traitlets.config.loader import PyFileConfigLoader

    root = Path(course_dir).resolve()
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    cd = cfg.CourseDirectory

    def sub(key: str, default: str) -> Path:
        return root / str(cd.get(key, default))

    return CoursePaths(
        root=root,
        course_id=str(cd.get("course_id", "default_course")) or "default_course",
        source=sub("source_directory", "source"),
        release=sub("release_directory", "release"),
        submitted=sub("submitted_directory", "submitted"),
        autograded=sub("autograded_directory", "autograded"),
        feedback=sub("feedback_directory", "feedback"),
        reports=root / "reports",
    )


def grade_cell_points(notebook: Path) -> dict[str, float]:
    """``{grade_id: points}`` of the nbgrader grade cells of a (source) notebook, in order."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    points: dict[str, float] = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            points[meta["grade_id"]] = float(meta.get("points", 0))
    return points


COURSE_DIR_HELP = ("the nbgrader course directory, holding nbgrader_config.py (default: the "
                   "current directory)")


def course_dir_of(given: str | Path | None) -> Path:
    """The one rule of every command: ``--course-dir DIR`` if given, else the current directory;
    either must hold ``nbgrader_config.py`` (FileNotFoundError says what to do)."""
    root = Path(given if given else Path.cwd()).resolve()
    if not (root / "nbgrader_config.py").is_file():
        raise FileNotFoundError(f"no nbgrader_config.py in {root}: run the command in the course "
                                "directory, or name it with --course-dir")
    return root
