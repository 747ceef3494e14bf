"""Grading a whole cohort: ``grade-course`` (``batch.py``), the gradebook bridge, feedback pages,
the cohort report, and grading on a Dask cluster (``cluster.py``).

The command-line wiring lives in ``autograder/commands.py``.
"""
