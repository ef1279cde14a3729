"""mmgenre.budget.Deadline on a fake clock (no sleeping, nothing timed)."""
from __future__ import annotations

import math

import pytest

from mmgenre.budget import Deadline
from mmgenre.errors import InputError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deadline_counts_down_from_when_it_is_made():
    clock = Clock()
    d = Deadline(2.5, clock=clock)
    assert not d.expired and d.remaining == 2.5
    clock.now += 2.0
    assert not d.expired and d.remaining == pytest.approx(0.5)
    clock.now += 0.5
    assert d.expired and d.remaining == 0.0
    clock.now += 10
    assert d.expired and d.remaining == 0.0


def test_zero_budget_is_expired_at_once_and_none_never_is():
    assert Deadline(0).expired
    clock = Clock()
    never = Deadline.none()
    assert not never.expired and math.isinf(never.remaining) and repr(never) == "Deadline.none()"
    forever = Deadline(math.inf, clock=clock)
    clock.now = 1e300
    assert not forever.expired


@pytest.mark.parametrize("bad", [-1, float("nan"), "5", None, True])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(InputError, match="deadline"):
        Deadline(bad)
