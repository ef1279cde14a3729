"""Who runs the shared models next: a lock that favours the request that has used them least.

Predictors share their encoders, and an explanation registers hooks on them, so one request at a
time may run the models. With a plain lock held for a whole explanation, a fresh request waits
for every explanation ahead of it. ``ServiceLock`` is held per stage instead (the forward pass,
Grad-CAM, Integrated Gradients, ...) and, when freed, goes to the waiting request whose
``Account`` has held it for the shortest time so far (least attained service, also called
foreground-background scheduling): a request that has already had a lot of model time yields at
its next stage to one that has had little, so a long or hostile explanation cannot hold a short
one hostage, and nobody starves for good since an explanation's own deadline
(``mmgenre.budget``) cuts it short. Ties go to the earlier arrival.

    account = Account()
    with lock.hold(account):   # one stage
        ...
"""
from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Account", "ServiceLock"]


@dataclass
class Account:
    """Model time one request has had, in seconds (summed over its stages)."""

    used: float = 0.0


class ServiceLock:
    """A re-entrant lock granted, when freed, to the waiter whose account has used it least."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._waiting: list[tuple[float, int]] = []  # (service used when it queued, arrival order)
        self._arrivals = itertools.count()

    @contextlib.contextmanager
    def hold(self, account: Account | None = None) -> Iterator[None]:
        account = account if account is not None else Account()
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:  # re-entered by the holder: no queueing, no extra accounting
                self._depth += 1
                nested = True
            else:
                nested = False
                ticket = (account.used, next(self._arrivals))
                self._waiting.append(ticket)
                try:
                    while self._owner is not None or min(self._waiting) != ticket:
                        self._cond.wait()
                finally:
                    self._waiting.remove(ticket)
                    if self._owner is not None:
                        self._cond.notify_all()  # an interrupted waiter may have been next in line
                self._owner, self._depth = me, 1
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not nested:
                    account.used += time.perf_counter() - start
                if self._depth == 0:
                    self._owner = None
                    self._cond.notify_all()
