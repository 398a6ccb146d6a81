"""Table-driven tests of polygon zones: enter/exit, exact dwell, exit grace against flicker, close and finish."""

from __future__ import annotations

import numpy as np
import pytest

from actors.detections import Detections
from actors.events import ZONE_ENTER, ZONE_EXIT, Event
from actors.zones import PolygonZone, points_in_polygon

T0 = 1_700_000_000.0
STEP = 0.5  # seconds between frames in these tables
W, H = 1000, 500
SQUARE = [(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)]
IN, OUT = (0.4, 0.4), (0.8, 0.4)

Path = list[tuple[float, float] | None]


def frame_dets(points: dict[int, tuple[float, float]]) -> Detections:
    """40x100 px boxes whose feet (bottom center) lie at the given normalised points."""
    if not points:
        return Detections.empty()
    rows = [[x * W - 20, y * H - 100, x * W + 20, y * H] for x, y in points.values()]
    return Detections(xyxy=np.array(rows), confidence=np.full(len(rows), 0.9), tracker_id=np.array(list(points)))


def enter(track: int, t: float) -> Event:
    return Event(T0 + t, "cam-1", track, ZONE_ENTER, zone_id="till")


def exit_(track: int, t: float, dwell: float) -> Event:
    return Event(T0 + t, "cam-1", track, ZONE_EXIT, zone_id="till", dwell_s=dwell)


def run(zone: PolygonZone, paths: dict[int, Path], occupancy: list[int] | None = None) -> list[tuple[int, Event]]:
    """Feed the paths, one frame every STEP seconds; return (frame index, event) pairs, append occupancies."""
    out: list[tuple[int, Event]] = []
    for f in range(max(len(p) for p in paths.values())):
        points = {tid: p[f] for tid, p in paths.items() if f < len(p) and p[f] is not None}
        out.extend((f, e) for e in zone.trigger(frame_dets(points), T0 + f * STEP, W, H))  # type: ignore[arg-type]
        if occupancy is not None:
            occupancy.append(zone.occupancy)
    return out


CASES = [
    pytest.param(
        {1: [OUT, IN, IN, IN, IN, IN, OUT, OUT, OUT, OUT]},
        # last inside at frame 5 (2.5 s); frame 7 is exactly 1.0 s later (kept), frame 8 1.5 s (exit)
        [(1, enter(1, 0.5)), (8, exit_(1, 2.5, 2.0))],
        [0, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        id="enter-exit-dwell-exact",
    ),
    pytest.param(
        # out at frame 4 only: back inside 1.0 s after the last sight (not more than the grace)
        {1: [OUT, IN, IN, IN, OUT, IN, IN, IN, OUT, OUT, OUT, OUT]},
        [(1, enter(1, 0.5)), (10, exit_(1, 3.5, 3.0))],
        [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        id="brief-exit-within-grace-does-not-split",
    ),
    pytest.param(
        {1: [IN, IN, None, IN, None, None, None]},
        [(0, enter(1, 0.0)), (6, exit_(1, 1.5, 1.5))],
        [1, 1, 1, 1, 1, 1, 0],
        id="unseen-within-grace-does-not-split",
    ),
    pytest.param(
        # out at frames 2 to 4: back inside 2.0 s after the last sight
        {1: [IN, IN, OUT, OUT, OUT, IN, IN, OUT, OUT, OUT]},
        [(0, enter(1, 0.0)), (4, exit_(1, 0.5, 0.5)), (5, enter(1, 2.5)), (9, exit_(1, 3.0, 0.5))],
        [1, 1, 1, 1, 0, 1, 1, 1, 1, 0],
        id="exit-longer-than-grace-splits-visits",
    ),
    pytest.param(
        {1: [IN, None, None, None, None, None, IN], 2: [OUT, OUT, OUT, OUT, OUT, OUT, OUT]},
        [(0, enter(1, 0.0)), (3, exit_(1, 0.0, 0.0)), (6, enter(1, 3.0))],
        [1, 1, 1, 0, 0, 0, 1],
        id="single-frame-visit-has-zero-dwell",
    ),
    pytest.param(
        {2: [OUT, IN, IN, IN, IN, IN, IN, IN], 1: [IN, IN, IN, OUT, OUT, OUT, OUT, OUT]},
        [(0, enter(1, 0.0)), (1, enter(2, 0.5)), (5, exit_(1, 1.0, 1.0))],
        [1, 2, 2, 2, 2, 1, 1, 1],
        id="two-tracks-occupancy",
    ),
]


@pytest.mark.parametrize(("paths", "expected", "occupancy"), CASES)
def test_visits(paths: dict[int, Path], expected: list[tuple[int, Event]], occupancy: list[int]) -> None:
    zone = PolygonZone("till", "cam-1", SQUARE, exit_grace_s=1.0)
    occ: list[int] = []
    assert run(zone, paths, occ) == expected
    assert occ == occupancy


def test_stalled_camera_does_not_split_visit() -> None:
    """Seen inside at 0 s and next at 5 s with no frame between: no evidence the person left, the visit goes on."""
    zone = PolygonZone("till", "cam-1", SQUARE, exit_grace_s=1.0)
    assert run(zone, {1: [IN]}) == [(0, enter(1, 0.0))]
    assert zone.trigger(frame_dets({1: IN}), T0 + 5.0, W, H) == []
    assert zone.finish() == [exit_(1, 5.0, 5.0)]


def test_close_removed_track_at_last_seen_inside() -> None:
    zone = PolygonZone("till", "cam-1", SQUARE, exit_grace_s=5.0)
    run(zone, {1: [IN, IN, IN, None], 2: [IN, IN]})
    assert zone.close([1, 3], T0 + 10.0) == [exit_(1, 1.0, 1.0)]
    assert zone.close([1], T0 + 11.0) == []
    assert zone.open_ids() == [2]


def test_finish_closes_all_in_track_order() -> None:
    zone = PolygonZone("till", "cam-1", SQUARE)
    run(zone, {3: [IN, IN, IN], 1: [None, IN, IN, None]})
    assert zone.finish() == [exit_(1, 1.0, 0.5), exit_(3, 1.0, 1.0)]
    assert zone.occupancy == 0
    assert zone.finish() == []


def test_min_dwell_does_not_filter_events() -> None:
    """Every visit is recorded; ``min_dwell_s`` is left to the KPI views."""
    zone = PolygonZone("till", "cam-1", SQUARE, min_dwell_s=10.0, exit_grace_s=0.0)
    assert [e for _, e in run(zone, {1: [IN, OUT]})] == [enter(1, 0.0), exit_(1, 0.0, 0.0)]


def test_untracked_rows_ignored() -> None:
    zone = PolygonZone("till", "cam-1", SQUARE)
    dets = frame_dets({5: IN})
    dets.tracker_id[:] = -1
    assert zone.trigger(dets, T0, W, H) == []
    assert zone.occupancy == 0


@pytest.mark.parametrize(
    ("point", "inside"),
    [
        pytest.param((0.3, 0.3), True, id="lower-arm"),
        pytest.param((0.7, 0.7), True, id="right-arm"),
        pytest.param((0.7, 0.3), False, id="notch"),
        pytest.param((0.05, 0.5), False, id="left-of-polygon"),
    ],
)
def test_non_convex_polygon(point: tuple[float, float], inside: bool) -> None:
    ell = np.array([(0.2, 0.2), (0.5, 0.2), (0.5, 0.6), (0.8, 0.6), (0.8, 0.8), (0.2, 0.8)])
    assert points_in_polygon(np.array([point]), ell).tolist() == [inside]


@pytest.mark.parametrize(
    ("polygon", "kwargs", "message"),
    [
        pytest.param([(0, 0), (1, 1)], {}, "at least 3", id="two-points"),
        pytest.param(SQUARE, {"exit_grace_s": -1}, ">= 0", id="negative-grace"),
        pytest.param(SQUARE, {"anchor": "top"}, "unknown anchor", id="bad-anchor"),
    ],
)
def test_rejects(polygon: list[tuple[float, float]], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolygonZone("till", "cam-1", polygon, **kwargs)  # type: ignore[arg-type]
