"""Table-driven tests of line crossing: direction, hysteresis dead band, segment extent, diagonal lines.

These are the geometric rules, tested with ``confirm_s=0`` (a crossing is returned at the flip);
``test_lines_confirm.py`` tests the confirmation delay on top of them."""

from __future__ import annotations

import numpy as np
import pytest

from actors.detections import Detections
from actors.events import LINE_CROSS, Event
from actors.lines import LineCounter

T0 = 1_700_000_000.0
W, H = 1000, 500  # normalised x = px / 1000, y = px / 500
DOOR = ((0.2, 0.5), (0.8, 0.5))  # horizontal segment; below it (y > 0.5) is the store
INSIDE = (0.5, 0.9)
OUTSIDE = (0.5, 0.1)

Path = list[tuple[float, float] | None]  # one anchor (normalised) per frame, None: not in that frame


def frame_dets(points: dict[int, tuple[float, float]], anchor: str = "bottom_center") -> Detections:
    """Boxes 40x100 px whose anchor lies at the given normalised points."""
    if not points:
        return Detections.empty()
    rows, ids = [], []
    for tid, (x, y) in points.items():
        px, py = x * W, y * H
        bottom = py if anchor == "bottom_center" else py + 50
        rows.append([px - 20, bottom - 100, px + 20, bottom])
        ids.append(tid)
    return Detections(xyxy=np.array(rows), confidence=np.full(len(rows), 0.9), tracker_id=np.array(ids))


def run(line: LineCounter, paths: dict[int, Path], anchor: str = "bottom_center") -> list[tuple[int, int, str]]:
    """Feed the paths frame by frame; return (frame, track, direction) of every event."""
    n = max(len(p) for p in paths.values())
    out = []
    for f in range(n):
        points = {tid: p[f] for tid, p in paths.items() if f < len(p) and p[f] is not None}
        for e in line.trigger(frame_dets(points, anchor), T0 + f / 10, W, H):  # type: ignore[arg-type]
            assert e == Event(T0 + f / 10, "cam-1", e.track_id, LINE_CROSS, line_id="door", direction=e.direction)
            out.append((f, e.track_id, str(e.direction)))
    return out


def vertical(x: float, *ys: float) -> Path:
    return [(x, y) for y in ys]


CASES = [
    pytest.param(DOOR, INSIDE, 0.02, {1: vertical(0.5, 0.3, 0.4, 0.5, 0.6, 0.7)}, [(3, 1, "in")], id="straight-in"),
    pytest.param(DOOR, INSIDE, 0.02, {1: vertical(0.5, 0.7, 0.6, 0.5, 0.4, 0.3)}, [(3, 1, "out")], id="straight-out"),
    pytest.param(
        DOOR, OUTSIDE, 0.02, {1: vertical(0.5, 0.3, 0.4, 0.5, 0.6, 0.7)}, [(3, 1, "out")], id="in-point-other-side"
    ),
    pytest.param(
        DOOR,
        INSIDE,
        0.02,
        {1: vertical(0.5, 0.3, 0.6, 0.7, 0.4, 0.3)},
        [(1, 1, "in"), (3, 1, "out")],
        id="in-then-out-one-each",
    ),
    pytest.param(
        DOOR,
        INSIDE,
        0.02,
        {1: vertical(0.5, 0.4, 0.49, 0.51, 0.49, 0.51, 0.5, 0.515, 0.6)},
        [(7, 1, "in")],
        id="lingering-on-line-counted-once-when-leaving-band",
    ),
    pytest.param(
        DOOR,
        INSIDE,
        0.02,
        {1: vertical(0.5, 0.4, 0.49, 0.51, 0.49, 0.51, 0.4)},
        [],
        id="lingering-on-line-then-back-not-counted",
    ),
    pytest.param(
        DOOR,
        INSIDE,
        0.05,
        {1: vertical(0.5, 0.4, 0.47, 0.53, 0.47, 0.53, 0.6)},
        [(5, 1, "in")],
        id="flicker-inside-wide-band-counted-once",
    ),
    pytest.param(
        DOOR,
        INSIDE,
        0.02,
        {1: vertical(0.5, 0.4, 0.47, 0.53, 0.47, 0.53)},
        [(2, 1, "in"), (3, 1, "out"), (4, 1, "in")],
        id="flicker-wider-than-band-counts-every-flip",
    ),
    pytest.param(DOOR, INSIDE, 0.02, {1: vertical(0.5, 0.3, 0.7)}, [(1, 1, "in")], id="fast-jump-across-band"),
    pytest.param(
        DOOR, INSIDE, 0.02, {1: [(0.5, 0.3), None, None, (0.5, 0.7)]}, [(3, 1, "in")], id="unseen-frames-then-across"
    ),
    pytest.param(DOOR, INSIDE, 0.02, {1: vertical(0.9, 0.3, 0.4, 0.6, 0.7)}, [], id="beside-segment-not-counted"),
    pytest.param(DOOR, INSIDE, 0.02, {1: vertical(0.81, 0.3, 0.7)}, [(1, 1, "in")], id="within-end-tolerance-counted"),
    pytest.param(DOOR, INSIDE, 0.02, {1: vertical(0.83, 0.3, 0.7)}, [], id="beyond-end-tolerance-not-counted"),
    pytest.param(
        DOOR,
        INSIDE,
        0.02,
        {1: [(0.9, 0.3), (0.9, 0.7), (0.5, 0.7), (0.5, 0.3)]},
        [(3, 1, "out")],
        id="around-the-end-then-back-through",
    ),
    pytest.param(DOOR, INSIDE, 0.02, {1: [(0.1, 0.7), (0.5, 0.3)]}, [(1, 1, "out")], id="slanted-move-through-segment"),
    pytest.param(DOOR, INSIDE, 0.02, {1: vertical(0.5, 0.5, 0.51, 0.6)}, [], id="first-seen-in-band-not-counted"),
    pytest.param(DOOR, INSIDE, 0.02, {1: vertical(0.5, 0.7, 0.8)}, [], id="first-seen-inside-not-counted"),
    pytest.param(
        ((0.0, 0.0), (1.0, 1.0)),
        (1.0, 0.0),
        0.02,
        {1: [(0.3, 0.7), (0.49, 0.51), (0.51, 0.49), (0.7, 0.3)]},
        [(3, 1, "in")],
        id="diagonal-line-in",
    ),
    pytest.param(
        ((1.0, 1.0), (0.0, 0.0)),
        (1.0, 0.0),
        0.02,
        {1: [(0.7, 0.3), (0.3, 0.7)]},
        [(1, 1, "out")],
        id="diagonal-line-reversed-endpoints-out",
    ),
    pytest.param(
        ((0.0, 0.0), (0.5, 0.5)),
        (1.0, 0.0),
        0.02,
        {1: [(0.6, 0.8), (0.9, 0.7)]},
        [],
        id="diagonal-line-beside-segment",
    ),
    pytest.param(
        DOOR,
        INSIDE,
        0.02,
        {2: vertical(0.6, 0.7, 0.6, 0.4), 1: vertical(0.4, 0.3, 0.4, 0.6)},
        [(2, 1, "in"), (2, 2, "out")],
        id="two-tracks-same-frame-in-track-order",
    ),
]


@pytest.mark.parametrize(("segment", "in_point", "hysteresis", "paths", "expected"), CASES)
def test_crossings(
    segment: tuple[tuple[float, float], tuple[float, float]],
    in_point: tuple[float, float],
    hysteresis: float,
    paths: dict[int, Path],
    expected: list[tuple[int, int, str]],
) -> None:
    line = LineCounter("door", "cam-1", segment[0], segment[1], in_point, hysteresis=hysteresis, confirm_s=0.0)
    assert run(line, paths) == expected
    assert line.in_count == sum(1 for *_, d in expected if d == "in")
    assert line.out_count == sum(1 for *_, d in expected if d == "out")


def test_center_anchor() -> None:
    line = LineCounter("door", "cam-1", *DOOR, INSIDE, anchor="center", confirm_s=0.0)
    assert run(line, {1: vertical(0.5, 0.3, 0.7)}, anchor="center") == [(1, 1, "in")]


def test_untracked_rows_ignored() -> None:
    line = LineCounter("door", "cam-1", *DOOR, INSIDE)
    for f, y in enumerate((0.3, 0.7)):
        dets = frame_dets({7: (0.5, y)})
        dets.tracker_id[:] = -1
        assert line.trigger(dets, T0 + f, W, H) == []
    assert (line.in_count, line.out_count) == (0, 0)


def test_forget_drops_side() -> None:
    line = LineCounter("door", "cam-1", *DOOR, INSIDE, confirm_s=0.0)
    line.trigger(frame_dets({1: (0.5, 0.3)}), T0, W, H)
    line.forget([1])
    assert line.trigger(frame_dets({1: (0.5, 0.7)}), T0 + 1, W, H) == []
    assert line.trigger(frame_dets({1: (0.5, 0.3)}), T0 + 2, W, H)[0].direction == "out"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"end": (0.2, 0.5)}, "same point", id="zero-length"),
        pytest.param({"in_point": (0.5, 0.5)}, "lies on the line", id="in-point-on-line"),
        pytest.param({"anchor": "top"}, "unknown anchor", id="bad-anchor"),
    ],
)
def test_rejects(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"start": DOOR[0], "end": DOOR[1], "in_point": INSIDE} | kwargs
    with pytest.raises(ValueError, match=message):
        LineCounter("door", "cam-1", **args)  # type: ignore[arg-type]
