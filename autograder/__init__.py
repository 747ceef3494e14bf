"""The PPO assignment kit's autograder: ``python -m autograder``.

Import side effect, on purpose: ``rfc3987_syntax`` is marked unimportable. jsonschema (pulled in
by nbformat and nbgrader) imports it only to validate IRI formats, which the kit never does, and
building its grammar costs about 2.8 s of every start-up (measured with ``python -X importtime``).
"""
import sys

sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
# Every assignment's own code and data: <course dir or kit root>/assignments/<name>/
# (autograder/plugins.py). Instructor-only: the sandbox (autograder/sandbox/backends.py) and the
# Gradescope lock-down keep it from student code.
ASSIGNMENTS_DIR = "assignments"
