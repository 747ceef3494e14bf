"""The trusted side's bounds on what one submission may cost it, in one place.

Every byte a student controls (the notebook, files next to it, the worker's reply lines) is read
through these caps before it is parsed, so the memory and time of every trusted process (the
``grade`` command, a ``grade-course`` slot, the coordinator) is bounded whatever the submission
holds. README "Security model" states the resulting worst case;
``tests/load/test_untrusted_bytes.py`` measures it.

Units: bytes unless the name says otherwise; ``*_VALUES`` count JSON values (containers, and the
elements they hold) outside strings, which is what a JSON parse allocates objects for.
"""
from __future__ import annotations

MIB = 1 << 20

# A notebook: checked from fstat before reading, and by a structural pre-scan before parsing.
NOTEBOOK_MAX_BYTES = 100 * MIB        # outputs included (they are dropped while parsing)
NOTEBOOK_MAX_VALUES = 1_000_000       # JSON values outside strings: ~100 bytes each once parsed
# What parsing may hold at once, estimated from the bytes before parsing: the file, its decoded
# text and its longest string, each text at 1, 2 or 4 bytes per character (Python's str is as
# wide as its widest character): ``size * (1 + 2 * width)``. An ASCII notebook passes at any
# size under the cap; one with an emoji passes up to 56 MiB.
NOTEBOOK_MAX_PARSE_BYTES = 512 * MIB

# Small files read from a student's folder (timestamp.txt).
SMALL_FILE_MAX_BYTES = 4096

# A student's folder is listed, not trusted: at most this many entries are read from it (more is
# that student's zero), and at most this many file names are repeated in a message.
FOLDER_MAX_ENTRIES = 1000
NAMES_SHOWN = 5

# One reply line from a worker: its length is checked before it is decoded, then its values
# are counted (the same pre-scan) before it is parsed. A bigger reply fails that one call.
REPLY_MAX_BYTES = 64 * MIB
REPLY_MAX_VALUES = 1_000_000
# Lines on a reply pipe that are not the pending reply (only student code writes those) are
# skipped; past either bound within one wait, the pending request fails instead.
REPLY_MAX_JUNK_LINES = 1000
REPLY_MAX_JUNK_BYTES = 64 * MIB

# Hashing and reading large files: chunk size.
READ_CHUNK_BYTES = 1 * MIB

# What README "Security model" states and tests/load/test_untrusted_bytes.py measures (VmHWM): the
# peak memory of any trusted process (``grade``, a slot, the coordinator), whatever the submission.
TRUSTED_PROCESS_MAX_BYTES = 768 * MIB

# The address space (RLIMIT_AS, soft limit; the workers they start set their own) of a
# grade-course slot and of the `grade` command, on the CPU:
# the last line of defence should a bound above be wrong.
SLOT_ADDRESS_SPACE_BYTES = 1024 * MIB
