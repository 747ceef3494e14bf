"""Assignment ``ppo_lm`` (Part 2): everything of it but its notebook
``source/ppo_lm/ppo_lm.ipynb`` (and the pretrained weights beside it).

Imported only through ``autograder.plugins`` as ``autograder_assignments.ppo_lm``; never
shipped in ``release/``. One ``test_<grade cell>.py`` per grade cell, the hidden batches and
checks (``hidden_inputs.py``), the RLHF test's helpers and evaluation (``training.py``), the
trusted trainer (``trainers/lm.py``), the calibrated thresholds and their calibration, the
mutant catalogue and its corpus, the demo recipe (docs/adding-an-assignment.md).
"""
