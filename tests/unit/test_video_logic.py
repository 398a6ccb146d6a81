"""Table-driven tests of the pure video logic: tracker, counting lines, zones, per-camera analytics."""

from __future__ import annotations

import numpy as np
import pytest

from actors.analytics import CameraAnalytics
from actors.detections import Detections
from actors.events import LINE_CROSS, ZONE_ENTER, ZONE_EXIT
from actors.lines import LineCounter
from actors.tracking import ByteTracker, TrackerConfig
from actors.zones import PolygonZone, points_in_polygon

W, H = 1000, 1000


def box(cx: float, cy: float, w: float = 40, h: float = 100) -> list[float]:
    """A person box whose feet (bottom centre) are at (cx, cy) in pixels."""
    return [cx - w / 2, cy - h, cx + w / 2, cy]


def dets(*rows: tuple[list[float], float]) -> Detections:
    if not rows:
        return Detections.empty()
    return Detections(xyxy=np.array([r[0] for r in rows]), confidence=np.array([r[1] for r in rows]))


def tracked(*rows: tuple[int, float, float]) -> Detections:
    """Tracked detections from (track id, feet x, feet y) in normalised coordinates."""
    if not rows:
        return Detections.empty()
    return Detections(
        xyxy=np.array([box(x * W, y * H) for _, x, y in rows]),
        confidence=np.ones(len(rows)),
        tracker_id=np.array([t for t, _, _ in rows]),
    )


# --- tracker ---------------------------------------------------------------------------------------------------


def run_tracker(frames: list[Detections], config: TrackerConfig | None = None, dt: float = 0.1) -> list[list[int]]:
    tr = ByteTracker(config or TrackerConfig())
    return [sorted(tr.update(d, i * dt).tracker_id.tolist()) for i, d in enumerate(frames)]


def walk(x0: float, vx: float, n: int, score: float = 0.9, y: float = 500) -> list[tuple[list[float], float]]:
    return [(box(x0 + vx * i, y), score) for i in range(n)]


def test_track_confirmed_after_min_hits_and_keeps_its_id() -> None:
    frames = [dets(r) for r in walk(100, 10, 6)]
    assert run_tracker(frames) == [[], [], [1], [1], [1], [1]]


def test_flicker_never_confirmed() -> None:
    frames = [dets((box(300, 500), 0.9)), dets(), dets((box(300, 500), 0.9)), dets(), dets()]
    assert run_tracker(frames) == [[], [], [], [], []]


def test_low_score_detection_recovers_a_track_in_the_second_stage() -> None:
    a = walk(100, 10, 6)
    frames = [dets(r) for r in a[:4]] + [dets((a[4][0], 0.3)), dets(a[5])]
    assert run_tracker(frames) == [[], [], [1], [1], [1], [1]]


def test_low_score_detection_alone_starts_nothing() -> None:
    frames = [dets((box(100, 500), 0.3)) for _ in range(5)]
    assert run_tracker(frames) == [[], [], [], [], []]


def test_occluded_then_found_again_keeps_its_id() -> None:
    a = walk(100, 10, 12)
    frames = [dets(r) if not 4 <= i <= 7 else dets() for i, r in enumerate(a)]
    assert run_tracker(frames) == [[], [], [1], [1], [], [], [], [], [1], [1], [1], [1]]


def test_lost_too_long_is_removed_and_ids_are_never_reused() -> None:
    cfg = TrackerConfig(max_lost_s=0.25)
    tr = ByteTracker(cfg)
    a = walk(100, 10, 4)
    for i, r in enumerate(a):
        tr.update(dets(r), i * 0.1)
    assert tr.active_ids() == [1]
    tr.update(dets(), 0.4)
    tr.update(dets(), 0.5)
    tr.update(dets(), 0.7)
    assert tr.removed_ids == [1]
    out = [tr.update(dets((box(100, 500), 0.9)), 0.8 + i * 0.1).tracker_id.tolist() for i in range(3)]
    assert out == [[], [], [2]]


def test_two_people_crossing_paths_keep_their_ids() -> None:
    left = walk(100, 30, 15, y=500)
    right = walk(520, -30, 15, y=520)
    tr = ByteTracker()
    ids = []
    for i in range(15):
        d = dets(left[i], right[i])
        out = tr.update(d, i * 0.1)
        by_x = dict(zip(out.tracker_id.tolist(), out.xyxy[:, 0].tolist(), strict=True))
        ids.append(by_x)
    # The person starting on the left is track 1 throughout and ends on the right.
    assert sorted(ids[-1]) == [1, 2]
    assert ids[-1][1] > ids[-1][2]
    assert ids[3][1] < ids[3][2]


def test_dropped_frames_do_not_break_association() -> None:
    a = walk(100, 25, 12)
    tr = ByteTracker()
    seen = []
    for i, r in enumerate(a):
        if i in (5, 6, 7):
            continue  # three frames dropped: the walker moved 100 px meanwhile
        seen.append(tr.update(dets(r), i * 0.1).tracker_id.tolist())
    assert seen == [[], [], [1], [1], [1], [1], [1], [1], [1]]


# --- lines -----------------------------------------------------------------------------------------------------


def line() -> LineCounter:
    # Horizontal line y = 0.5 from x 0.2 to 0.8; inside is below (y > 0.5).
    return LineCounter("door", "cam", (0.2, 0.5), (0.8, 0.5), (0.5, 0.9), hysteresis=0.02)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([0.40, 0.45, 0.55, 0.60], ["in"]),  # straight in
        ([0.60, 0.55, 0.45, 0.40], ["out"]),  # straight out
        ([0.40, 0.60, 0.40], ["in", "out"]),  # in then out
        ([0.40, 0.49, 0.51, 0.49, 0.51, 0.499, 0.505], []),  # lingering in the dead band: no flip
        ([0.40, 0.49, 0.51, 0.49, 0.51, 0.60], ["in"]),  # jitter on the line, then in: once
        ([0.30, 0.70], ["in"]),  # fast walker jumping the line between two frames
        ([0.40, 0.55, 0.45, 0.56, 0.44], ["in", "out", "in", "out"]),  # real crossings each time
    ],
)
def test_line_crossings(path: list[float], expected: list[str]) -> None:
    lc = line()
    got = []
    for i, y in enumerate(path):
        got += [e.direction for e in lc.trigger(tracked((1, 0.5, y)), float(i), W, H)]
    assert got == expected
    assert (lc.in_count, lc.out_count) == (expected.count("in"), expected.count("out"))


@pytest.mark.parametrize(
    ("x", "expected"),
    [(0.5, 1), (0.79, 1), (0.81, 1), (0.9, 0), (0.1, 0)],  # 0.81 is within the end tolerance
)
def test_line_is_a_segment_not_an_infinite_line(x: float, expected: int) -> None:
    lc = line()
    n = 0
    for i, y in enumerate([0.4, 0.6]):
        n += len(lc.trigger(tracked((1, x, y)), float(i), W, H))
    assert n == expected


@pytest.mark.parametrize(("in_point", "expected"), [((0.5, 0.9), "in"), ((0.5, 0.1), "out")])
def test_in_point_sets_the_direction(in_point: tuple[float, float], expected: str) -> None:
    lc = LineCounter("door", "cam", (0.2, 0.5), (0.8, 0.5), in_point)
    events = [e for i, y in enumerate([0.4, 0.6]) for e in lc.trigger(tracked((7, 0.5, y)), float(i), W, H)]
    assert [(e.kind, e.line_id, e.track_id, e.direction, e.ts) for e in events] == [(LINE_CROSS, "door", 7, expected, 1.0)]


def test_diagonal_line_and_untracked_rows() -> None:
    lc = LineCounter("diag", "cam", (0.1, 0.1), (0.9, 0.9), (0.9, 0.1))  # inside: upper right
    d0 = tracked((1, 0.3, 0.6))
    d1 = tracked((1, 0.6, 0.3))
    assert lc.trigger(d0, 0.0, W, H) == []
    assert [e.direction for e in lc.trigger(d1, 1.0, W, H)] == ["in"]
    untracked = Detections(xyxy=d0.xyxy, confidence=d0.confidence)
    assert lc.trigger(untracked, 2.0, W, H) == []


# --- zones -----------------------------------------------------------------------------------------------------

SQUARE = [(0.4, 0.4), (0.6, 0.4), (0.6, 0.6), (0.4, 0.6)]


def test_points_in_polygon() -> None:
    pts = np.array([[0.5, 0.5], [0.1, 0.1], [0.59, 0.41], [0.7, 0.5]])
    assert points_in_polygon(pts, np.array(SQUARE)).tolist() == [True, False, True, False]


def test_zone_enter_exit_with_exact_dwell() -> None:
    z = PolygonZone("till", "cam", SQUARE, exit_grace_s=1.0)
    events = []
    for t in range(0, 50):
        ts = t * 0.1
        inside = 1.0 <= ts <= 3.0
        events += z.trigger(tracked((3, 0.5, 0.5 if inside else 0.9)), ts, W, H)
    got = [(e.kind, e.track_id, round(e.ts, 3), e.dwell_s) for e in events]
    assert got == [(ZONE_ENTER, 3, 1.0, None), (ZONE_EXIT, 3, 3.0, 2.0)]


def test_zone_flicker_within_grace_does_not_split_the_visit() -> None:
    z = PolygonZone("till", "cam", SQUARE, exit_grace_s=1.0)
    events = []
    for t in range(0, 60):
        ts = round(t * 0.1, 3)
        if 2.0 <= ts <= 2.5:
            d = Detections.empty()  # lost for half a second
        else:
            d = tracked((3, 0.5, 0.5 if ts <= 4.0 else 0.9))
        events += z.trigger(d, ts, W, H)
    assert [(e.kind, round(e.ts, 3), e.dwell_s) for e in events] == [(ZONE_ENTER, 0.0, None), (ZONE_EXIT, 4.0, 4.0)]


def test_zone_close_and_finish_use_last_seen_inside() -> None:
    z = PolygonZone("till", "cam", SQUARE)
    z.trigger(tracked((1, 0.5, 0.5), (2, 0.45, 0.45)), 10.0, W, H)
    z.trigger(tracked((1, 0.5, 0.5), (2, 0.45, 0.45)), 12.5, W, H)
    assert z.occupancy == 2
    closed = z.close([1, 99], 20.0)
    assert [(e.track_id, e.ts, e.dwell_s) for e in closed] == [(1, 12.5, 2.5)]
    assert [(e.track_id, e.ts, e.dwell_s) for e in z.finish()] == [(2, 12.5, 2.5)]
    assert z.occupancy == 0


# --- analytics -------------------------------------------------------------------------------------------------


def test_camera_analytics_counts_one_walker_once() -> None:
    an = CameraAnalytics(
        "cam",
        ByteTracker(TrackerConfig(max_lost_s=0.3)),
        [LineCounter("door", "cam", (0.0, 0.5), (1.0, 0.5), (0.5, 0.9))],
        [PolygonZone("hall", "cam", [(0.0, 0.55), (1.0, 0.55), (1.0, 1.0), (0.0, 1.0)], exit_grace_s=0.2)],
    )
    events = []
    for i in range(20):  # walks down from y=0.30 to y=0.87, then disappears
        y = 0.30 + 0.03 * i
        _t, ev = an.process(dets((box(500, y * H), 0.9)), i * 0.1, W, H)
        events += ev
    for i in range(20, 26):
        _t, ev = an.process(Detections.empty(), i * 0.1, W, H)
        events += ev
    kinds = [(e.kind, e.direction or e.zone_id) for e in events]
    assert kinds == [(LINE_CROSS, "in"), (ZONE_ENTER, "hall"), (ZONE_EXIT, "hall")]
    assert events[2].ts == pytest.approx(1.9)
    assert an.finish(3.0) == []
