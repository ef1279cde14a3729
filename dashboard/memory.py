"""Give memory back after heavy requests, so a server that answered big uploads shrinks again.

Python frees a request's arrays when its last reference goes, but glibc keeps freed heap pages
(and raises its mmap threshold after a big free, so later big arrays land on the heap too):
the process RSS stays at its peak. :func:`release_memory` runs a garbage collection (reference
cycles: tracebacks, autograd graphs) and ``malloc_trim(0)``, which returns free pages to the
system. :class:`Releaser` runs it in the background after a request that left the process
``grown`` bytes above its last trimmed size (a heavy one), so no visitor waits for it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import threading


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def rss_bytes() -> int | None:
    """Resident memory of this process (Linux: /proc/self/statm), or None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_memory() -> bool:
    """Collect garbage and return free heap pages to the OS; True when ``malloc_trim`` ran."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class Releaser:
    """A daemon thread that runs :func:`release_memory` when :meth:`after_request` finds the
    process ``grown`` bytes above its size after the previous release (or at the first call)."""

    def __init__(self, grown: int = 192 * 2**20):
        self.grown = grown
        self.runs = 0
        self._floor: int | None = None
        self._wanted = threading.Event()
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="mmgenre-memory", daemon=True)
        self._thread.start()

    def after_request(self) -> bool:
        """Schedule a release if the process grew; True when one was scheduled."""
        rss = rss_bytes()
        if rss is not None and self._floor is not None and rss - self._floor < self.grown:
            return False
        self._wanted.set()
        return True

    def wait(self, runs: int, timeout: float | None = None) -> bool:
        """Block until ``runs`` releases have happened (tests and benchmarks)."""
        with self._done:
            return self._done.wait_for(lambda: self.runs >= runs, timeout)

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            release_memory()
            rss = rss_bytes()
            with self._done:
                self._floor = rss     # what the process needs now; growth is measured from here
                self.runs += 1
                self._done.notify_all()
