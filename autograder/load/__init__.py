"""Reading notebooks safely, in the trusted parent (no student code runs here).

- ``extract.py``: ``extract_definitions(source) -> Extracted`` keeps a cell's definitions only.
- ``notebook.py``: ``read_submission(path, assignment) -> Submission``, never raises for a bad
  notebook; builds the cells the sandboxed worker executes.
- ``integrity.py``: nbgrader checksums and metadata of the student's cells against the source,
  as flags.
"""
