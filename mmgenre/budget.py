"""A time budget for one request: ``Deadline(seconds)`` starts counting when it is made.

    deadline = Deadline(10.0)           # or Deadline.none(): never expires
    ...
    if deadline.expired:                # checked between stages; a stage is never interrupted
        skipped.append("faithfulness")

The clock is monotonic (wall-clock changes do not move a deadline); tests pass their own clock.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

from mmgenre.errors import InputError


class Deadline:
    """``seconds`` from now (a finite number >= 0); :meth:`none` never expires."""

    __slots__ = ("_clock", "_end", "seconds")

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds) \
                or seconds < 0:
            raise InputError(f"deadline: expected a number of seconds >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        self._clock = clock
        self._end = clock() + self.seconds     # inf stays inf: Deadline(math.inf) == none()

    @classmethod
    def none(cls) -> "Deadline":
        """A deadline that never expires (``remaining`` is ``inf``)."""
        return cls(math.inf)

    @property
    def expired(self) -> bool:
        return self._clock() >= self._end

    @property
    def remaining(self) -> float:
        """Seconds left, 0.0 once expired (``inf`` for :meth:`none`)."""
        return max(0.0, self._end - self._clock())

    def __repr__(self) -> str:
        if math.isinf(self._end):
            return "Deadline.none()"
        return f"Deadline({self.seconds:g} s, {self.remaining:.3g} s left)"
