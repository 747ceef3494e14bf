"""Hidden suite of assignment ``ppo`` (never shipped in release/): one ``test_<grade cell>.py``
per grade cell, the shared checks, the training-test helpers, the calibrated thresholds and the
mutant catalogue."""
