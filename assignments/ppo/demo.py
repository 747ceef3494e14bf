"""The demo cohort of assignment ``ppo`` (``make demo``; ``autograder/course/demo.py``).

``DEMO_MUTANTS``: the mutants of ``mutants.py`` shown in the demo, one student each (those that
apply to the answer key). ``PARTIAL_FUNCTIONS``: the functions the "partial" student answered.
"""
DEMO_MUTANTS = ["reinforce_sign_flipped", "gae_forward", "gae_ignores_bootstrap",
                "gae_lambda_ignored", "clip_upper_only", "combined_half_mse",
                "clip_max_not_min", "gae_mutates_rewards"]
PARTIAL_FUNCTIONS = ["reinforce_loss"]
