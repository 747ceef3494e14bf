"""Reading notebooks safely, in the trusted parent (no student code runs here).

- ``extract.py``: ``run_as_written(source) -> Extracted`` (the whole cell less shell/magic
  lines) and ``extract_definitions(source) -> Extracted`` (a cell's definitions only).
- ``notebook.py``: ``read_submission(path, assignment) -> Submission``, never raises for a bad
  notebook; builds the cells the sandboxed worker executes (which cells run in full, which give
  their definitions only).
- ``integrity.py``: nbgrader checksums and metadata of the student's cells against the source,
  as flags.
"""
