"""ServiceLock: one holder at a time, re-entrant, and granted to the waiter that has used it least."""
from __future__ import annotations

import threading
import time

import pytest

from mmgenre.scheduling import Account, ServiceLock


def _wait_for_waiters(lock: ServiceLock, n: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while len(lock._waiting) < n:
        assert time.monotonic() < end, "waiters never queued"
        time.sleep(0.001)


def test_the_waiter_with_least_service_goes_first_whatever_its_arrival():
    lock, order = ServiceLock(), []
    heavy, light = Account(used=5.0), Account(used=0.0)
    release = threading.Event()

    def holder():
        with lock.hold(Account()):
            release.wait(10)

    def waiter(name, account):
        with lock.hold(account):
            order.append(name)

    t0 = threading.Thread(target=holder)
    t0.start()
    _wait_until_owned(lock)
    threads = [threading.Thread(target=waiter, args=("heavy", heavy))]
    threads[0].start()
    _wait_for_waiters(lock, 1)
    threads.append(threading.Thread(target=waiter, args=("light", light)))
    threads[1].start()
    _wait_for_waiters(lock, 2)
    release.set()
    for t in [t0, *threads]:
        t.join(10)
    assert order == ["light", "heavy"]


def test_ties_go_to_the_earlier_arrival():
    lock, order = ServiceLock(), []
    release = threading.Event()
    holder = threading.Thread(target=lambda: _hold_until(lock, release))
    holder.start()
    _wait_until_owned(lock)
    threads = []
    for i in range(4):
        t = threading.Thread(target=lambda i=i: _append_under(lock, order, i))
        t.start()
        _wait_for_waiters(lock, i + 1)
        threads.append(t)
    release.set()
    for t in [holder, *threads]:
        t.join(10)
    assert order == [0, 1, 2, 3]


def test_service_is_accounted_and_the_lock_is_reentrant_and_exclusive():
    lock, account = ServiceLock(), Account()
    inside, overlap = [0], []

    with lock.hold(account):
        with lock.hold(Account()):  # the holder re-enters without deadlock
            time.sleep(0.01)
    assert account.used >= 0.01

    def work():
        for _ in range(50):
            with lock.hold():
                inside[0] += 1
                overlap.append(inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert max(overlap) == 1 and len(overlap) == 200
    assert lock._owner is None and not lock._waiting


def test_an_exception_inside_frees_the_lock():
    lock = ServiceLock()
    with pytest.raises(RuntimeError):
        with lock.hold():
            raise RuntimeError("stage failed")
    done = threading.Event()
    t = threading.Thread(target=lambda: _append_under(lock, [], 0) or done.set())
    t.start()
    t.join(10)
    assert done.is_set()


def _wait_until_owned(lock: ServiceLock, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while lock._owner is None:
        assert time.monotonic() < end
        time.sleep(0.001)


def _hold_until(lock: ServiceLock, event: threading.Event) -> None:
    with lock.hold():
        event.wait(10)


def _append_under(lock: ServiceLock, out: list, value) -> None:
    with lock.hold():
        out.append(value)
