"""Grading one submission: the suite runner, its pytest plugin, and the result it builds."""
