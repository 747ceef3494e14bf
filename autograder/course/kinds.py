"""What a result is, from its flags: graded, failed to read, or a grader error; flagged or not."""
from __future__ import annotations

# "Nothing could be graded": the summary's "failed to read".
UNREAD_CODES = {"unreadable_notebook", "no_notebook", "ambiguous_submission",
                "not_a_regular_file"}
# Flags that are not integrity findings (a link or special file submitted is one).
NOT_INTEGRITY = (UNREAD_CODES - {"not_a_regular_file"}) | {"grader_error", "device_fallback"}


def flag_codes(result: dict) -> set[str]:
    return {f.get("code") for f in result.get("extra_data", {}).get("flags", [])}


def kind(result: dict) -> str:
    """'grader error', 'failed to read' or 'graded'."""
    codes = flag_codes(result)
    if "grader_error" in codes:
        return "grader error"
    if codes & UNREAD_CODES:
        return "failed to read"
    return "graded"


def is_flagged(result: dict) -> bool:
    """Has an integrity finding (a renamed notebook, a changed locked cell, a limit hit...)."""
    return bool(flag_codes(result) - NOT_INTEGRITY)
