"""The results JSON is the wire format at the edge: a ``GradingResult`` written out validates
against Gradescope's documented results schema (with the kit's ``extra_data`` spelled out), reads
back to the same result, and a damaged file gives a clear error, never a crash of the cohort."""
from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from autograder.course.batch import Job, is_up_to_date, read_result
from autograder.course.report import Cohort
from autograder.outcomes import OUTCOMES, Flag
from autograder.results import GradingResult, ResultDetails, ResultFormatError, new_details
from autograder.results import TestResult as Check
from gradescope_schema import RESULTS_SCHEMA

# What the kit puts in ``extra_data`` (``ResultDetails``); Gradescope keeps it for staff only.
CELL_TOTALS = {"type": "object", "required": ["score", "max_score"],
               "properties": {"score": {"type": "number"}, "max_score": {"type": "number"}},
               "additionalProperties": False}
EXTRA_DATA_SCHEMA = {
    "type": "object",
    "required": ["max_score", "student", "assignment", "sandbox", "device", "flags",
                 "grade_cells", "submission_sha256"],
    "properties": {
        "max_score": {"type": "number", "minimum": 0},
        "student": {"type": "string"},
        "assignment": {"type": "string"},
        "sandbox": {"type": "string"},
        "device": {"type": "string"},
        "flags": {"type": "array", "items": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"enum": [o.code for o in OUTCOMES]},
                           "message": {"type": "string"}},
            "additionalProperties": False}},
        "grade_cells": {"type": "object", "additionalProperties": CELL_TOTALS},
        "submission_sha256": {"type": "string", "pattern": "^([0-9a-f]{64})?$"},
    },
}
KIT_SCHEMA = copy.deepcopy(RESULTS_SCHEMA)
KIT_SCHEMA["properties"]["extra_data"] = EXTRA_DATA_SCHEMA
KIT_SCHEMA["required"] = ["score", "execution_time", "output", "tests", "extra_data"]
KIT_SCHEMA["properties"]["tests"]["items"]["required"] = [
    "name", "score", "max_score", "status", "output", "tags", "visibility"]


def a_result(**details) -> GradingResult:
    tests = [Check("compute_gae: worked example", 2.5, 2.5, "passed", "", ["compute_gae"]),
             Check("compute_gae: hidden inputs", 0.0, 2.5, "failed",
                        "The first wrong number is at position 3", ["compute_gae"]),
             Check("ppo_training: learns", 2.0, 2.0, "passed", "", ["ppo_training"],
                        extra_data={"training": {"metrics": [], "curves": []}})]
    info = new_details(student="ada", assignment="ppo", max_score=7.0,
                       submission_sha256="ab" * 32,
                       flags=[{"code": "renamed_notebook", "message": "graded draft.ipynb"}])
    info.sandbox, info.device = "bwrap", "cpu"
    info.add_flag("limit_cpu", "the worker used its CPU-seconds limit")
    for key, value in details.items():
        setattr(info, key, value)
    return GradingResult.build(tests, info, output="compute_gae: 2.5 / 5", execution_time=3.25)


def test_a_written_result_is_a_gradescope_result(tmp_path):
    result = a_result()
    result.write(tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    jsonschema.validate(data, RESULTS_SCHEMA)          # Gradescope's format
    jsonschema.validate(data, KIT_SCHEMA)              # and the kit's extra_data
    assert data["score"] == 4.5 == sum(t["score"] for t in data["tests"])
    assert data["extra_data"]["grade_cells"] == {"compute_gae": {"score": 2.5, "max_score": 5.0},
                                                 "ppo_training": {"score": 2.0, "max_score": 2.0}}
    assert [f["code"] for f in data["extra_data"]["flags"]] == ["renamed_notebook", "limit_cpu"]
    assert "extra_data" not in data["tests"][0] and "training" in data["tests"][2]["extra_data"]
    assert "visibility" not in data                    # set only for Gradescope (gradescope.py)


def test_a_result_round_trips_unchanged(tmp_path):
    result = a_result()
    path = tmp_path / "results.json"
    result.write(path)
    again = GradingResult.read(path)
    assert again == GradingResult.from_json(result.to_json())
    assert again.to_json() == result.to_json()
    again.write(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()     # byte for byte
    assert again.details.flags[1] == Flag("limit_cpu", "the worker used its CPU-seconds limit")
    # Gradescope's visibility keys and keys of extra_data the kit does not write are kept
    data = result.to_json()
    data["visibility"], data["stdout_visibility"] = "after_published", "hidden"
    data["extra_data"]["late_note"] = {"by": "ta"}
    assert GradingResult.from_json(data).to_json() == data
    jsonschema.validate(data, RESULTS_SCHEMA)


def test_an_old_or_partial_file_reads_with_defaults():
    # what run_autograder writes when the grader cannot even start
    fallback = {"score": 0, "output": "The autograder failed to start (exit status 7).",
                "tests": [], "extra_data": {"flags": [{"code": "grader_error",
                                                       "message": "run_autograder: exit 7"}]}}
    result = GradingResult.from_json(fallback)
    assert result.details == ResultDetails(flags=[Flag("grader_error", "run_autograder: exit 7")])
    assert result.execution_time == 0.0 and result.max_score == 0.0
    jsonschema.validate(result.to_json(), KIT_SCHEMA)   # written back in today's full shape
    bare = GradingResult.from_json({"score": 1, "tests": [
        {"name": "a: b", "score": 1, "max_score": 2}]})
    assert bare.tests[0].status == "failed" and bare.tests[0].tags == []
    assert bare.max_score == 2.0 and bare.details.student == ""
    assert GradingResult.from_json({"score": 1, "extra_data": {"student": 4242}}) \
        .details.student == "4242"                      # an id written as a number
    # an old code is kept (and counts as needing a look), not refused
    old = GradingResult.from_json({"score": 0, "extra_data": {"flags": [{"code": "retired"}]}})
    assert old.details.flags == [Flag("retired", "")]


DAMAGED = [
    (b"", "not JSON"),
    (b'{"score": 1, "tests": [', "not JSON"),
    (b"[1, 2]", "a result must be a JSON object"),
    (b'{"tests": []}', "score must be a finite number"),
    (b'{"score": "full"}', "score must be a finite number"),
    (b'{"score": 1, "tests": {}}', "tests must be a list"),
    (b'{"score": 1, "tests": [{"score": 1, "max_score": 1}]}', "tests[0]: name must be a string"),
    (b'{"score": 1, "tests": [{"name": "x", "score": 1}]}', "tests[0]: max_score must be"),
    (b'{"score": 1, "tests": [{"name": "x", "score": 1, "max_score": 1, "status": "ok"}]}',
     "tests[0]: status must be"),
    (b'{"score": 1, "extra_data": []}', "extra_data must be a JSON object"),
    (b'{"score": 1, "extra_data": {"flags": {"code": "x"}}}', "extra_data.flags must be a list"),
    (b'{"score": 1, "extra_data": {"flags": [{"message": "x"}]}}', "a flag must be an object"),
    (b'{"score": 1, "extra_data": {"max_score": "16"}}', "extra_data.max_score must be"),
    (b'{"score": 1, "extra_data": {"grade_cells": {"a": {"score": 1}}}}',
     "extra_data.grade_cells.a.max_score must be"),
]


@pytest.mark.parametrize("raw, message", DAMAGED)
def test_a_damaged_file_gives_a_clear_error(tmp_path, raw, message):
    path = tmp_path / "results.json"
    path.write_bytes(raw)
    with pytest.raises(ResultFormatError) as caught:
        GradingResult.read(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert isinstance(caught.value, ValueError)        # what every reader of a file catches


def test_a_damaged_file_never_stops_the_cohort(tmp_path):
    autograded = tmp_path / "autograded"
    for student in ("ana", "bo", "cy"):
        a_result(student=student).write(autograded / student / "ppo" / "results.json")
    (autograded / "bo" / "ppo" / "results.json").write_text('{"score": 1, "tests": {}}')
    cohort = Cohort.load(autograded, "ppo")
    assert sorted(cohort.results) == ["ana", "cy"]       # the damaged one is left out
    assert read_result(autograded / "bo" / "ppo" / "results.json") is None
    job = Job("bo", tmp_path, tmp_path / "ppo.ipynb", "ab" * 32)
    assert not is_up_to_date(job, autograded / "bo" / "ppo" / "results.json")   # regraded
    assert is_up_to_date(Job("cy", tmp_path, None, "ab" * 32),
                         autograded / "cy" / "ppo" / "results.json")
