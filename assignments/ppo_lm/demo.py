"""The demo cohort of assignment ``ppo_lm`` (``make demo``; ``autograder/course/demo.py``).

``DEMO_MUTANTS``: the mutants of ``mutants.py`` shown in the demo, one student each (those that
apply to the answer key). ``PARTIAL_FUNCTIONS``: the functions the "partial" student answered.
"""
DEMO_MUTANTS = ["rewards_kl_sign_flipped", "mean_includes_padding", "gae_leaks_across_rows",
                "gae_lambda_ignored", "ppo_no_clipping", "ppo_ratio_inverted"]
PARTIAL_FUNCTIONS = ["per_token_rewards", "masked_mean"]
