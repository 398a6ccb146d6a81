"""Table-driven tests of one camera's analytics: tracker, line, zone and the closing of removed tracks together."""

from __future__ import annotations

import numpy as np
import pytest

from actors.analytics import CameraAnalytics
from actors.detections import Detections
from actors.events import LINE_CROSS, ZONE_ENTER, ZONE_EXIT, Event
from actors.lines import LineCounter
from actors.tracking import ByteTracker, TrackerConfig
from actors.zones import PolygonZone

T0 = 1_700_000_000.0
W, H = 1000, 500
CAM = "cam-1"

Person = dict[int, tuple[float, float]]  # frame -> normalised feet point


def walk_down(x: float, frames: range, y0: float = 0.3, vy: float = 0.05) -> Person:
    """Feet moving down 0.05 (25 px) per frame, from ``y0`` at the first frame, stopping at 0.8."""
    return {f: (x, min(y0 + vy * (f - frames.start), 0.8)) for f in frames}


def frame_dets(points: list[tuple[float, float]]) -> Detections:
    if not points:
        return Detections.empty()
    rows = [[x * W - 20, y * H - 100, x * W + 20, y * H] for x, y in points]
    return Detections(xyxy=np.array(rows), confidence=np.full(len(rows), 0.9))


def build(exit_grace_s: float) -> CameraAnalytics:
    # confirm_s=0: crossings at the flip, so that the frame of each event is the frame that caused it (the
    # confirmation delay through the analytics is tested in test_lines_confirm.py)
    line = LineCounter("door", CAM, (0.2, 0.5), (0.8, 0.5), in_point=(0.5, 0.9), confirm_s=0.0)
    zone = PolygonZone("aisle", CAM, [(0.0, 0.62), (1.0, 0.62), (1.0, 1.0), (0.0, 1.0)], exit_grace_s=exit_grace_s)
    return CameraAnalytics(CAM, ByteTracker(TrackerConfig()), [line], [zone])


def feed(analytics: CameraAnalytics, n: int, *people: Person) -> list[tuple[int, Event]]:
    """Frames 0..n-1 at 10 fps; returns (frame index of the call, event), checking each call's events are sorted."""
    out: list[tuple[int, Event]] = []
    for f in range(n):
        dets = frame_dets([p[f] for p in people if f in p])
        _, events = analytics.process(dets, T0 + f / 10, W, H)
        assert [e.ts for e in events] == sorted(e.ts for e in events)
        out.extend((f, e) for e in events)
    return out


def cross(t: float, track: int, direction: str = "in") -> Event:
    return Event(T0 + t, CAM, track, LINE_CROSS, line_id="door", direction=direction)


def enter(t: float, track: int) -> Event:
    return Event(T0 + t, CAM, track, ZONE_ENTER, zone_id="aisle")


def exit_(t: float, track: int, dwell: float) -> Event:
    return Event(T0 + t, CAM, track, ZONE_EXIT, zone_id="aisle", dwell_s=dwell)


# One person walks in from y 0.3: confirmed at frame 2 (y 0.4), past the line's band at frame 5 (y 0.55), in the
# zone from frame 7 (y 0.65), last seen at frame 10 (y 0.8, 1.0 s); the tracker removes them at frame 41 (3.1 s lost).
CASES = [
    pytest.param(
        1.0,
        [walk_down(0.5, range(11))],
        45,
        [(5, cross(0.5, 1)), (7, enter(0.7, 1)), (21, exit_(1.0, 1, 0.3))],
        {"aisle": 0},
        id="grace-ends-visit-before-tracker-removal",
    ),
    pytest.param(
        10.0,
        [walk_down(0.5, range(11))],
        45,
        [(5, cross(0.5, 1)), (7, enter(0.7, 1)), (41, exit_(1.0, 1, 0.3))],
        {"aisle": 0},
        id="tracker-removal-closes-visit-at-last-seen",
    ),
    pytest.param(
        10.0,
        [walk_down(0.5, range(11))],
        30,
        [(5, cross(0.5, 1)), (7, enter(0.7, 1))],
        {"aisle": 1},
        id="visit-still-open-while-track-lost",
    ),
    pytest.param(
        1.0,
        [walk_down(0.3, range(11)), walk_down(0.7, range(16, 27))],
        30,
        # person 2 is confirmed at frame 18 and crosses at frame 21, the call that also ends person 1's visit
        [(5, cross(0.5, 1)), (7, enter(0.7, 1)), (21, exit_(1.0, 1, 0.3)), (21, cross(2.1, 2)), (23, enter(2.3, 2))],
        {"aisle": 1},
        id="events-of-one-call-sorted-by-ts",
    ),
    pytest.param(
        1.0,
        [walk_down(0.5, range(6)), {f: (0.5, 0.3) for f in range(8, 14)}],
        14,
        # someone appears far above the lost track (no match): a new track, whose first side is only recorded
        [(5, cross(0.5, 1))],
        {"aisle": 0},
        id="new-track-first-seen-above-line-is-not-a-crossing",
    ),
]


@pytest.mark.parametrize(("grace", "people", "frames", "expected", "occupancy"), CASES)
def test_camera_events(
    grace: float, people: list[Person], frames: int, expected: list[tuple[int, Event]], occupancy: dict[str, int]
) -> None:
    analytics = build(grace)
    assert feed(analytics, frames, *people) == expected
    assert analytics.occupancy == occupancy


def test_process_returns_tracked_detections() -> None:
    analytics = build(1.0)
    feed(analytics, 2, walk_down(0.5, range(2)))
    tracked, events = analytics.process(frame_dets([(0.5, 0.4)]), T0 + 0.2, W, H)
    assert tracked.tracker_id.tolist() == [1]
    np.testing.assert_array_equal(tracked.xyxy, np.array([[480, 100, 520, 200]], np.float32))
    assert events == []


def test_finish_closes_visits_and_never_reuses_ids() -> None:
    analytics = build(1.0)
    feed(analytics, 11, walk_down(0.5, range(11)))
    assert analytics.occupancy == {"aisle": 1}
    assert analytics.finish(T0 + 1.0) == [exit_(1.0, 1, 0.3)]
    assert analytics.occupancy == {"aisle": 0}
    assert analytics.finish(T0 + 1.0) == []
    # the source restarts: the person standing in the zone gets a new id and a new visit
    events = []
    for f in range(3):
        tracked, ev = analytics.process(frame_dets([(0.5, 0.8)]), T0 + 5 + f / 10, W, H)
        events.extend(ev)
    assert tracked.tracker_id.tolist() == [2]
    assert events == [enter(5.2, 2)]


def test_rejects_line_of_another_camera() -> None:
    line = LineCounter("door", "cam-2", (0.2, 0.5), (0.8, 0.5), in_point=(0.5, 0.9))
    with pytest.raises(ValueError, match="line door belongs to camera cam-2"):
        CameraAnalytics(CAM, ByteTracker(), [line], [])
