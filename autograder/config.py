"""Settings: read once from the course's ``nbgrader_config.py`` (section ``c.PPOKit``)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from autograder.sandbox.limits import Limits


class ConfigError(Exception):
    """The course configuration is missing or wrong; the message says what to fix."""


@dataclass(frozen=True)
class Settings:
    course_dir: Path   # the nbgrader course root (holds source/, submitted/, gradebook.db)
    cohort_seed: int   # rotated per cohort; every hidden input derives from it
    device: str        # "auto" | "cpu" | "cuda"
    sandbox: str       # "auto" | "bwrap" | "fallback" | "unsafe"
    jobs: int
    limits: Limits
    db_url: str

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)


def load_settings(course_dir: str | Path) -> Settings:
    """Read ``<course_dir>/nbgrader_config.py``. Raises ConfigError with a plain message."""
    from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

    course_dir = Path(course_dir).resolve()
    try:
        cfg = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    except ConfigFileNotFound:
        raise ConfigError(f"no nbgrader_config.py in {course_dir}") from None
    kit = cfg.PPOKit
    limit_names = {f.name for f in fields(Limits)}
    given = dict(kit.get("limits", {}))
    unknown = set(given) - limit_names
    if unknown:
        raise ConfigError(f"unknown limits in nbgrader_config.py: {sorted(unknown)}")
    limits = replace(Limits(), **given)
    jobs = int(kit.get("jobs", 2))
    if not limits.gpu_memory_fraction:   # each slot runs a student worker and a reference
        limits = replace(limits, gpu_memory_fraction=round(1 / (2 * max(1, jobs)), 4))
    if not 0 < limits.gpu_memory_fraction <= 1:
        raise ConfigError("c.PPOKit.limits gpu_memory_fraction must be in (0, 1]")
    db_url = cfg.CourseDirectory.get("db_url") or f"sqlite:///{course_dir}/gradebook.db"
    settings = Settings(
        course_dir=course_dir,
        cohort_seed=int(kit.get("cohort_seed", 0)),
        device=str(kit.get("device", "auto")),
        sandbox=str(kit.get("sandbox", "auto")),
        jobs=jobs,
        limits=limits,
        db_url=db_url,
    )
    if settings.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"c.PPOKit.device must be auto, cpu or cuda, not {settings.device!r}")
    if settings.sandbox not in ("auto", "bwrap", "fallback", "unsafe"):
        raise ConfigError("c.PPOKit.sandbox must be auto, bwrap, fallback or unsafe")
    return settings
