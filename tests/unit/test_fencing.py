"""The one fence rule (``cluster.fencing.Fence``): the edge cases every runner relies on."""

from __future__ import annotations

import math

import pytest

from cluster.fencing import Fence


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_nothing_may_run_before_the_first_renewal() -> None:
    f = Fence(1.6, Clock(100.0))
    assert (f.deadline, f.expired()) == (-math.inf, True)


def test_a_renewal_buys_its_window_from_when_it_was_sent() -> None:
    clock = Clock(100.0)
    f = Fence(1.6, clock)
    assert f.renewed(99.9) == pytest.approx(101.5)
    clock.now = 101.4
    assert f.expired() is False
    clock.now = 101.5
    assert f.expired() is True  # at the deadline, not only after it


def test_a_renewal_after_expiry_moves_the_deadline_ahead_again() -> None:
    clock = Clock(100.0)
    f = Fence(1.6, clock)
    f.renewed(100.0)
    clock.now = 102.0
    assert f.expired() is True
    f.renewed(102.0)
    assert (f.deadline, f.expired()) == (pytest.approx(103.6), False)


def test_a_late_or_repeated_renewal_never_moves_the_deadline_back() -> None:
    f = Fence(1.6, Clock(100.0))
    f.renewed(100.4)
    f.renewed(100.0)  # a renewal sent earlier, answered later
    f.extend(90.0)
    f.extend(math.nan)
    assert f.deadline == pytest.approx(102.0)


@pytest.mark.parametrize(("deadline", "expired"), [(100.5, False), (99.5, True)])
def test_a_stalled_clock_keeps_the_answer_it_had(deadline: float, expired: bool) -> None:
    """A monotonic clock that stops moving (a frozen VM) neither expires a deadline ahead of it nor lifts one behind."""
    clock = Clock(100.0)
    f = Fence(clock=clock, deadline=deadline)
    assert [f.expired() for _ in range(3)] == [expired] * 3


def test_a_handed_fence_takes_deadlines_and_has_no_window() -> None:
    f = Fence(clock=Clock(100.0), deadline=101.0)
    assert f.extend(101.5) == 101.5
    with pytest.raises(ValueError, match="handed deadlines"):
        f.renewed(100.0)


@pytest.mark.parametrize("window", [0.0, -1.0, math.inf, math.nan])
def test_a_window_must_be_a_positive_number(window: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        Fence(window)


def test_since_renewal() -> None:
    f = Fence(1.6, Clock(100.0))
    f.renewed(100.0)
    assert f.since_renewal(101.0) == pytest.approx(1.0)
