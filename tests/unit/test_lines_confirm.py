"""Table-driven tests of the confirmation delay of a line (``confirm_s``), alone and through the camera analytics."""

from __future__ import annotations

import pytest

from actors.analytics import CameraAnalytics
from actors.events import LINE_CROSS, Event
from actors.lines import CONFIRM_S, LineCounter
from actors.tracking import ByteTracker, TrackerConfig
from tests.unit.test_lines import DOOR, INSIDE, T0, H, W, frame_dets

Y = dict[int, float]  # frame -> feet y (normalised) of track 1 at x 0.5; frames without a key: not seen


def run(line: LineCounter, ys: Y, frames: int) -> list[tuple[int, float, str]]:
    """10 fps; (frame of the call that returned it, event ts - T0, direction) of every event."""
    out = []
    for f in range(frames):
        dets = frame_dets({1: (0.5, ys[f])} if f in ys else {})
        for e in line.trigger(dets, T0 + f / 10, W, H):
            out.append((f, round(e.ts - T0, 3), str(e.direction)))
    return out


CASES = [
    pytest.param(
        {0: 0.3, 1: 0.45, 2: 0.55, 3: 0.7, 4: 0.8},
        10,
        [(7, 0.2, "in")],
        id="final-after-confirm-s-stamped-at-the-crossing",
    ),
    pytest.param(
        {0: 0.3, 1: 0.55, 2: 0.45, 3: 0.3},
        10,
        [],
        id="back-across-within-confirm-s-cancels-both",
    ),
    pytest.param(
        {0: 0.3, 1: 0.55, 2: 0.7, 3: 0.7, 4: 0.7, 5: 0.7, 6: 0.7, 7: 0.45, 8: 0.3},
        15,
        [(6, 0.1, "in"), (12, 0.7, "out")],
        id="back-across-after-confirm-s-counts-both",
    ),
    pytest.param(
        {0: 0.3, 1: 0.55},
        10,
        [(6, 0.1, "in")],
        id="final-on-a-frame-without-the-track",
    ),
    pytest.param(
        {0: 0.3, 1: 0.55, 2: 0.3, 3: 0.55},
        10,
        [(8, 0.3, "in")],
        id="in-out-in-within-confirm-s-counts-the-last-in",
    ),
]


@pytest.mark.parametrize(("ys", "frames", "expected"), CASES)
def test_confirmation(ys: Y, frames: int, expected: list[tuple[int, float, str]]) -> None:
    line = LineCounter("door", "cam-1", *DOOR, INSIDE, confirm_s=0.5)
    assert run(line, ys, frames) == expected
    assert (line.in_count, line.out_count) == (
        sum(1 for *_, d in expected if d == "in"),
        sum(1 for *_, d in expected if d == "out"),
    )


def test_default_delay() -> None:
    assert LineCounter("door", "cam-1", *DOOR, INSIDE).confirm_s == CONFIRM_S == 0.5


def test_forget_and_flush_make_pending_final_at_once() -> None:
    line = LineCounter("door", "cam-1", *DOOR, INSIDE, confirm_s=0.5)
    assert run(line, {0: 0.3, 1: 0.55}, 2) == []
    assert line.forget([1]) == [Event(T0 + 0.1, "cam-1", 1, LINE_CROSS, line_id="door", direction="in")]
    assert line.in_count == 1
    run(line, {0: 0.7, 1: 0.3}, 2)  # the same id again: a first side, then an out, pending
    assert [e.direction for e in line.flush()] == ["out"]
    assert line.flush() == []


def test_rejects_negative_delay() -> None:
    with pytest.raises(ValueError, match="confirm_s must be >= 0"):
        LineCounter("door", "cam-1", *DOOR, INSIDE, confirm_s=-1.0)


def test_analytics_delays_crossings_sorted_and_finish_flushes() -> None:
    """Through the tracker: the crossing is returned 0.5 s after the frame that made it, with that frame's ts;
    the events of every call stay sorted; ``finish`` returns a crossing still pending."""
    line = LineCounter("door", "cam-1", *DOOR, INSIDE)
    analytics = CameraAnalytics("cam-1", ByteTracker(TrackerConfig()), [line], [])
    walk = [0.3 + 0.05 * f for f in range(9)]  # feet reach 0.55 at frame 5, past the band (0.52)
    got = []
    for f, y in enumerate(walk):
        _, events = analytics.process(frame_dets({0: (0.5, y)}), T0 + f / 10, W, H)
        assert [e.ts for e in events] == sorted(e.ts for e in events)
        got += [(f, round(e.ts - T0, 3), e.direction) for e in events]
    # confirmed at frame 2 (y 0.4); past the band at frame 5 (0.5 s); final at frame 10 (1.0 s): not yet
    assert got == []
    assert [(round(e.ts - T0, 3), e.direction) for e in analytics.finish(T0 + 0.8)] == [(0.5, "in")]
    # a second walker after the restart: final 0.5 s after its crossing, in a later call
    got = []
    for f, y in enumerate(walk + [0.75] * 6):
        _, events = analytics.process(frame_dets({0: (0.5, y)}), T0 + 10 + f / 10, W, H)
        got += [(f, round(e.ts - T0, 3), e.direction) for e in events]
    assert got == [(10, 10.5, "in")]
