"""The Gradescope setup.sh locks the installed kit down by allow-list: only the runtime the
worker needs (``backends.runtime_paths()``, the same list bubblewrap binds) stays readable to
other users; everything else, present or added later, is root-only."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from test_gradescope import bundle, install  # noqa: F401  (bundle is a fixture)

from autograder.sandbox.backends import fallback_exposures, runtime_paths


def other_can(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode) & 0o007


def test_only_the_runtime_stays_readable(bundle, tmp_path):  # noqa: F811
    root = tmp_path / "autograder"
    src = root / "source"
    (src / "autograder").mkdir(parents=True)
    (src / "autograder" / "added_later.py").write_text("ANSWER = 1\n")   # not in any list
    install(bundle, root)
    runtime = [src / rel for rel in runtime_paths()]
    on_the_way = {p for r in runtime for p in r.parents if src in p.parents or p == src}
    readable = []
    for dirpath, dirs, files in os.walk(src):
        for name in dirs + files:
            path = Path(dirpath) / name
            if not other_can(path):
                continue
            inside = any(path == r or r in path.parents for r in runtime)
            if inside:
                continue
            assert path in on_the_way and other_can(path) == 0o001, path   # search only
            readable.append(path)
    assert other_can(src) == 0o001
    for r in runtime:                          # the runtime itself is readable
        assert r.exists() and other_can(r) & 0o004, r
        for f in ([r] if r.is_file() else [p for p in r.rglob("*") if p.is_file()]):
            assert other_can(f) & 0o004, f
    assert (src / "autograder" / "calibration.py").exists()
    assert not other_can(src / "autograder" / "calibration.py")
    assert (src / "assignments" / "ppo" / "trainers" / "bandit.py").exists()
    for part in ("assignments", "assignments/ppo", "assignments/ppo/trainers/bandit.py",
                 "autograder/harness/relay.py"):
        assert not other_can(src / part), part
    assert not other_can(src / "autograder" / "added_later.py")
    assert fallback_exposures(src, kit_root=src) == []
