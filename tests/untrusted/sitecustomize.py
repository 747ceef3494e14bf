"""Loaded by every Python process of the trusted side that a test of ``test_untrusted_bytes``
starts (``PYTHONPATH`` holds this folder; sandboxed workers run with ``-I`` and never load it).
When ``UNTRUSTED_MEMORY_DIR`` is set, a thread writes this process's peak resident memory
(``VmHWM``, KiB), its soft RLIMIT_AS and command line to ``<dir>/<pid>`` every 20 ms and at exit;
VmHWM never decreases, so the last value written holds the peak up to then. Each writing
thread has its own temporary file, so the loop and the exit hook never truncate each other's
file before it is renamed (every file read holds all three lines)."""
import atexit
import os
import resource
import threading
import time

_DIR = os.environ.get("UNTRUSTED_MEMORY_DIR")


def _write() -> None:
    try:
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        with open("/proc/self/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        tmp = os.path.join(_DIR, f".{os.getpid()}.{threading.get_ident()}.tmp")   # one a thread
        with open(tmp, "w") as f:
            f.write(f"{hwm}\n{soft}\n{cmd}\n")
        os.replace(tmp, os.path.join(_DIR, str(os.getpid())))
    except (OSError, StopIteration, ValueError):
        pass


def _loop() -> None:
    while True:
        _write()
        time.sleep(0.02)


if _DIR:
    threading.Thread(target=_loop, daemon=True, name="memory-probe").start()
    atexit.register(_write)
