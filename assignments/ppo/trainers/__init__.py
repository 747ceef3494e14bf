"""The trusted trainers of assignment ``ppo`` (run in the trusted reference worker only)."""
