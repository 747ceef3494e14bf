"""Findings of a review, each a class of untrusted input with a bounded cost, tested here."""
from __future__ import annotations

import os

import pytest

from autograder import bounds
from autograder.course.batch import Job, choose_notebook, notebook_reader
from autograder.load import untrusted
from autograder.load.notebook import Unreadable, parse_notebook


def test_a_value_the_parser_refuses_is_the_files_problem():
    huge_int = b'{"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {"x": ' + \
        b"9" * 5000 + b"}}"
    with pytest.raises(Unreadable, match="notebook the grader can read"):
        parse_notebook(huge_int)


def test_a_folder_of_many_files_is_one_zero_with_a_short_message(tmp_path):
    folder = tmp_path / "submitted" / "ann" / "ppo"
    folder.mkdir(parents=True)
    for i in range(bounds.FOLDER_MAX_ENTRIES + 5):
        (folder / f"x{i:05d}{'y' * 100}.ipynb").touch()
    job = choose_notebook(folder, "ppo", "ann", base=tmp_path / "submitted")
    assert job.notebook is None and "more than" in job.problem
    assert len(job.flags[-1]["message"]) < 500


def test_many_notebooks_are_named_a_few_at_a_time(tmp_path):
    folder = tmp_path / "submitted" / "ann" / "ppo"
    folder.mkdir(parents=True)
    for i in range(40):
        (folder / f"n{i:02d}{'z' * 100}.ipynb").touch()
    job = choose_notebook(folder, "ppo", "ann", base=tmp_path / "submitted")
    assert job.notebook is None and "and 35 more" in job.problem
    assert len(job.problem) < 1000


def test_the_cluster_reads_a_notebook_bounded_and_without_links(tmp_path):
    submitted = tmp_path / "submitted"
    folder = submitted / "ann" / "ppo"
    folder.mkdir(parents=True)
    big = folder / "ppo.ipynb"
    with open(big, "wb") as f:             # sparse: past the cap without using the disk
        f.truncate(bounds.NOTEBOOK_MAX_BYTES + (50 << 20))
    read = notebook_reader(submitted)
    job = Job("ann", folder, big, "0" * 64)
    with pytest.raises(untrusted.Refused):
        read(job)
    big.unlink()
    secret = tmp_path / "key.ipynb"
    secret.write_text("{}")
    os.symlink(secret, big)
    with pytest.raises(untrusted.Refused):
        read(job)


MARKDOWN_LINKS = [
    "[see plot](javascript:fetch('/api/terminals',{method:'POST'}))",
    "[x](JaVaScRiPt&#58;alert(1))",
    "[ref][1]\n\n[1]: javascript:alert(1)",
    "![img](javascript:alert(1))",
    "<javascript:alert(1)>",
    "[ok](https://example.org) and <a href=\"https://example.org\">fine</a>",
]


@pytest.mark.parametrize("text", MARKDOWN_LINKS)
def test_student_markdown_renders_no_script_link_in_a_staff_view(text):
    """Rendered by nbconvert's own Markdown renderer (what formgrader and generate_feedback
    use), sanitised student Markdown has no link or image whose URL is not http(s)."""
    import re

    from nbconvert.filters.markdown import markdown2html_mistune

    from autograder.course.autograded_notebook import sanitise

    html = markdown2html_mistune(sanitise(text))
    urls = re.findall(r'(?:href|src)\s*=\s*["\']?([^"\' >]+)', html, flags=re.I)
    assert all(u.lower().startswith(("http://", "https://")) for u in urls), (text, html)
    assert "javascript" not in " ".join(urls).lower()
