"""Hidden suite of assignment ``ppo_lm`` (never shipped in release/): one ``test_<grade cell>.py``
per grade cell, the shared checks, the training-test helpers, the calibration, the calibrated
thresholds and the mutant catalogue."""
