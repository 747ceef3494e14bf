"""Where student code runs: the worker process, how it is started and limited, and its protocol."""
