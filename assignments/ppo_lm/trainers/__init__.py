"""The trusted trainer of assignment ``ppo_lm`` (run in the trusted reference worker only)."""
