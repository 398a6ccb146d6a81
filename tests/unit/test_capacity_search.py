"""bench/capacity.py's search and verdict: the right camera count on a synthetic slow detector, without timing."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from bench.capacity import max_passing, verdict


def slow_detector(ms_per_frame: float, fps: float) -> tuple[list[int], Callable[[int], bool]]:
    """A probe for cameras at ``fps`` on a detector needing ``ms_per_frame`` per frame: n cameras are carried while
    they ask for no more than the detector's second of work per second. Records every n it is asked about."""
    asked: list[int] = []

    def probe(n: int) -> bool:
        asked.append(n)
        return n * fps * ms_per_frame <= 1000.0

    return asked, probe


@pytest.mark.parametrize(
    ("ms", "fps", "limit", "expected"),
    [
        (30.0, 10.0, 64, 3),  # 1000 / 300 = 3.3
        (10.0, 10.0, 64, 10),  # exactly 10: the edge passes
        (10.0, 5.0, 64, 20),
        (19.0, 5.0, 64, 10),  # 10.5
        (250.0, 10.0, 64, 0),  # not even one camera
        (1.0, 5.0, 16, 16),  # more than the limit: the limit
        (100.0, 10.0, 64, 1),
        (7.0, 10.0, 64, 14),  # 14.3
    ],
)
def test_search_finds_the_largest_count_carried(ms: float, fps: float, limit: int, expected: int) -> None:
    asked, probe = slow_detector(ms, fps)
    n, trace = max_passing(probe, limit=limit)
    assert n == expected
    assert n == min(limit, math.floor(1000.0 / (fps * ms)))
    assert [t[0] for t in trace] == asked
    assert len(set(asked)) == len(asked)  # no count probed twice
    assert len(asked) <= 2 * math.ceil(math.log2(limit)) + 2


def test_search_order_doubles_then_bisects() -> None:
    _, probe = slow_detector(30.0, 10.0)  # carries 3
    n, trace = max_passing(probe, limit=64)
    assert n == 3
    assert trace == [(1, True), (2, True), (4, False), (3, True)]


def test_search_below_start_and_at_limit() -> None:
    _, probe = slow_detector(30.0, 10.0)  # carries 3
    assert max_passing(probe, start=8, limit=64)[1] == [(8, False), (4, False), (2, True), (3, True)]
    _, probe = slow_detector(1.0, 10.0)  # carries 100
    assert max_passing(probe, start=1, limit=12) == (12, [(1, True), (2, True), (4, True), (8, True), (12, True)])


def test_search_rejects_a_bad_range() -> None:
    with pytest.raises(ValueError, match="start=0"):
        max_passing(lambda n: True, start=0)
    with pytest.raises(ValueError, match="limit=2"):
        max_passing(lambda n: True, start=4, limit=2)


def st(frames: int, dropped: int) -> dict[str, int]:
    return {"frames": frames, "dropped": dropped}


def test_verdict_passes_cameras_that_kept_their_rate() -> None:
    before = {"cam-1": st(10, 3), "cam-2": st(5, 0)}
    after = {"cam-1": st(90, 3), "cam-2": st(80, 0)}  # 80 and 75 of 80 asked (0.95 x 80 = 76, less one frame)
    assert verdict(before, after, fps=10.0, seconds=8.0) == (True, "2 cameras, 155 frames in 8 s, none dropped")


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        ({"cam-1": st(90, 4), "cam-2": st(85, 0)}, "1 of 2 cameras behind: cam-1 dropped 1"),
        ({"cam-1": st(90, 3), "cam-2": st(79, 0)}, "1 of 2 cameras behind: cam-2 processed 74 of 80"),
        (
            {"cam-1": st(40, 9), "cam-2": st(6, 0)},
            "2 of 2 cameras behind: cam-1 dropped 6, cam-2 processed 1 of 80",
        ),
        ({"cam-1": st(90, 3)}, "camera cam-2 gave no status"),
    ],
)
def test_verdict_fails_on_a_drop_or_a_lag(after: dict[str, dict[str, int]], reason: str) -> None:
    before = {"cam-1": st(10, 3), "cam-2": st(5, 0)}
    assert verdict(before, after, fps=10.0, seconds=8.0) == (False, reason)
