"""Assignment ``ppo`` (Part 1): everything of it but its notebook ``source/ppo/ppo.ipynb``.

Imported only through ``autograder.plugins`` as ``autograder_assignments.ppo``; never shipped
in ``release/``. One ``test_<grade cell>.py`` per grade cell, the hidden inputs
(``hidden_inputs.py``), the training-test helpers (``training.py``), the trusted trainers
(``trainers/``), the calibrated thresholds and their calibration, the mutant catalogue and its
corpus, the demo recipe (docs/adding-an-assignment.md).
"""
