"""Peak memory of this process while a block runs, split into anonymous and file-backed pages.

``ru_maxrss`` counts the pages of memory-mapped feature caches that a run touched; those are the
OS page cache's and can be dropped under pressure. What a machine must really provide is the
anonymous part (the heap: tensors, tables, models), so both are sampled from /proc/self/status.
"""
from __future__ import annotations

import threading
from pathlib import Path

STATUS = Path("/proc/self/status")


def _status_mb() -> dict[str, float]:
    out = {}
    for line in STATUS.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


class PeakMemory:
    """``with PeakMemory() as peak: ...``; then ``peak.rss_mb``, ``peak.anon_mb`` (max over samples
    every ``interval`` s, so a spike shorter than that can be missed) and ``peak.file_mb``."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.rss_mb = self.anon_mb = self.file_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-memory")

    @staticmethod
    def available() -> bool:
        return STATUS.is_file()

    def _sample(self) -> None:
        s = _status_mb()
        self.rss_mb = max(self.rss_mb, s.get("VmRSS", 0.0))
        self.anon_mb = max(self.anon_mb, s.get("RssAnon", 0.0))
        self.file_mb = max(self.file_mb, s.get("RssFile", 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        if self.available():
            self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.available():
            self._stop.set()
            self._thread.join()
            self._sample()
