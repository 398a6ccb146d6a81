"""Table-driven tests of where a crossing is placed (the fitted path, ``fit_s``) and of tracks born in view
(``back_s``): exact events for paths whose single-frame moves and fitted walks disagree."""

from __future__ import annotations

import numpy as np
import pytest

from actors.detections import Detections
from actors.lines import LineCounter
from tests.unit.test_lines import DOOR, INSIDE, T0, H, W

Path = dict[int, tuple[float, float]]  # frame (10 fps) -> anchor (normalised) of track 1; missing: not seen


def dets(x: float, y: float, width_px: float = 40.0) -> Detections:
    px, py = x * W, y * H
    box = [px - width_px / 2, py - 100, px + width_px / 2, py]
    return Detections(xyxy=np.array([box]), confidence=np.array([0.9]), tracker_id=np.array([1]))


def run(line: LineCounter, path: Path, frames: int) -> list[tuple[int, float, str]]:
    """(frame of the call that returned it, event ts - T0, direction) of every event; frame 0 is always fed."""
    out = []
    for f in range(frames):
        d = dets(*path[f]) if f in path else Detections.empty()
        for e in line.trigger(d, T0 + f / 10, W, H):
            out.append((f, round(e.ts - T0, 3), str(e.direction)))
    for e in line.flush():
        out.append((frames, round(e.ts - T0, 3), str(e.direction)))
    return out


def walk(x: float, ys: list[float], start: int = 0, wobble: dict[int, float] | None = None) -> Path:
    """A walk at ``x`` through ``ys`` from frame ``start``; ``wobble`` moves x on some frames (a box's jump)."""
    return {start + i: ((wobble or {}).get(start + i, x), y) for i, y in enumerate(ys)}


DOWN = [0.30, 0.35, 0.40, 0.45, 0.55, 0.60, 0.65, 0.70, 0.75]  # crosses y 0.5 between frames 3 and 4

PATH_CASES = [
    # The door ends at x 0.8 (0.82 with the band). A walker at x 0.80 whose box jumps to 0.86 on the first frame past
    # the line: the single move (0.80, 0.45) -> (0.86, 0.55) meets the line at x 0.83, beside the segment.
    pytest.param(walk(0.80, DOWN, wobble={4: 0.86}), 0.0, [], id="end-jump-single-move-beside"),
    pytest.param(walk(0.80, DOWN, wobble={4: 0.86}), 1.0, [(9, 0.4, "in")], id="end-jump-fitted-walk-through"),
    # A walker at x 0.85, beside the door, whose box jumps in to 0.77 on the first frame past the line: the single
    # move meets the line at x 0.81.
    pytest.param(walk(0.85, DOWN, wobble={4: 0.77}), 0.0, [(9, 0.4, "in")], id="beside-jump-single-move-through"),
    pytest.param(walk(0.85, DOWN, wobble={4: 0.77}), 1.0, [], id="beside-jump-fitted-walk-beside"),
    # Far from the ends both agree.
    pytest.param(walk(0.50, DOWN, wobble={4: 0.56}), 1.0, [(9, 0.4, "in")], id="middle-jump-counted"),
    # A track re-found after 2 s on the other side: the fit spans the gap (the last definite point is kept).
    pytest.param(
        {0: (0.5, 0.30), 1: (0.5, 0.35), 20: (0.5, 0.70), 21: (0.5, 0.72)}, 1.0, [(25, 2.0, "in")], id="after-a-gap"
    ),
]


@pytest.mark.parametrize(("path", "fit_s", "expected"), PATH_CASES)
def test_fitted_path(path: Path, fit_s: float, expected: list[tuple[int, float, str]]) -> None:
    line = LineCounter("door", "cam-1", *DOOR, INSIDE, fit_s=fit_s, back_s=0.0)
    assert run(line, path, 30) == expected


BIRTH_CASES = [
    # Born at frame 20 (2 s into the stream) just past the band (y 0.53), walking into the store at 0.5 a second:
    # 1 s earlier it was at y 0.03, beyond the band on the other side, and the move meets the door: it crossed
    # unseen. Stamped at the birth, returned 0.5 s later. Walking at 0.2 a second from y 0.75, it was at 0.55 a
    # second earlier: on the same side, not counted.
    pytest.param(walk(0.5, [0.53, 0.58, 0.63, 0.68, 0.73, 0.78, 0.83], start=20), {}, [(25, 2.0, "in")], id="born-in"),
    pytest.param(
        walk(0.5, [0.47, 0.42, 0.37, 0.32, 0.27, 0.22, 0.17], start=20), {}, [(25, 2.0, "out")], id="born-out"
    ),
    pytest.param(
        walk(0.5, [0.50, 0.51, 0.53, 0.58, 0.63, 0.68, 0.73], start=20), {}, [(25, 2.0, "in")], id="born-on-the-line"
    ),
    pytest.param(walk(0.5, [0.53] * 8, start=20), {}, [], id="born-standing"),
    pytest.param({20 + i: (0.3 + 0.05 * i, 0.53) for i in range(8)}, {}, [], id="born-walking-along-the-line"),
    pytest.param(
        walk(0.5, [0.75, 0.77, 0.79, 0.81, 0.83, 0.85], start=20), {}, [], id="born-farther-than-back-s-of-walking"
    ),
    pytest.param(walk(0.5, [0.53, 0.58, 0.63, 0.68, 0.73, 0.78], start=5), {}, [], id="born-in-the-first-back-s"),
    pytest.param(walk(0.5, [0.53, 0.58, 0.63, 0.68, 0.73, 0.78], start=20), {"back_s": 0.0}, [], id="back-s-0-off"),
    pytest.param(walk(0.9, [0.53, 0.58, 0.63, 0.68, 0.73, 0.78], start=20), {}, [], id="born-beside-the-segment"),
]


@pytest.mark.parametrize(("path", "kwargs", "expected"), BIRTH_CASES)
def test_born_in_view(path: Path, kwargs: dict[str, float], expected: list[tuple[int, float, str]]) -> None:
    line = LineCounter("door", "cam-1", *DOOR, INSIDE, **kwargs)  # type: ignore[arg-type]
    assert run(line, path, 30) == expected
    assert (line.in_count, line.out_count) == (
        sum(1 for *_, d in expected if d == "in"),
        sum(1 for *_, d in expected if d == "out"),
    )


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        pytest.param(0.03, [], id="born-at-the-left-edge-not-projected"),
        pytest.param(0.10, [(25, 2.0, "in")], id="born-two-box-widths-in-projected"),
    ],
)
def test_born_at_the_edge(x: float, expected: list[tuple[int, float, str]]) -> None:
    line = LineCounter("door", "cam-1", (0.0, 0.5), (0.6, 0.5), INSIDE)
    assert run(line, walk(x, [0.53, 0.58, 0.63, 0.68, 0.73, 0.78], start=20), 30) == expected


def test_rejects_negative_fit_and_back() -> None:
    with pytest.raises(ValueError, match="fit_s and back_s must be >= 0"):
        LineCounter("door", "cam-1", *DOOR, INSIDE, back_s=-1.0)


def test_a_reset_is_a_fresh_start_for_tracks_born_in_view() -> None:
    """A crossing counted and flushed at a pause (``CameraAnalytics.finish``: flush, then reset), then the same person
    seen again as a new track just past the line: not projected back and counted twice, as at a stream's start."""
    line = LineCounter("door", "cam-1", *DOOR, INSIDE)
    got = run(line, walk(0.5, [0.30, 0.35, 0.40, 0.45, 0.55], start=20), 25)  # crosses between frames 23 and 24
    assert got == [(25, 2.4, "in")]
    line.reset()
    after = walk(0.5, [0.57, 0.62, 0.67, 0.72, 0.77, 0.82, 0.87], start=0)
    after = {f: (x, y) for f, (x, y) in after.items()}
    out = []
    for f in range(10):  # the same person as track 1 again, 2.7 s after the pause
        d = dets(*after[f]) if f in after else Detections.empty()
        out += line.trigger(d, T0 + 2.7 + f / 10, W, H)
    assert out == [] and (line.in_count, line.out_count) == (1, 0)


def _feed(line: LineCounter, frames: list[dict[int, tuple[float, float]]]) -> list[tuple[float, int, str]]:
    out = []
    for f, tracks in enumerate(frames):
        if tracks:
            boxes = [[x * W - 20, y * H - 100, x * W + 20, y * H] for x, y in tracks.values()]
            d = Detections(xyxy=np.array(boxes), confidence=np.full(len(boxes), 0.9), tracker_id=np.array(list(tracks)))
        else:
            d = Detections.empty()
        out += [(round(e.ts - T0, 2), e.track_id, str(e.direction)) for e in line.trigger(d, T0 + f / 10, W, H)]
    return out + [(round(e.ts - T0, 2), e.track_id, str(e.direction)) for e in line.flush()]


@pytest.mark.parametrize(
    ("gap", "u_shift", "expected"),
    [
        pytest.param(3, 0.0, [(2.5, 1, "in")], id="lost-past-the-line-and-back-as-a-new-track: counted once"),
        pytest.param(15, 0.0, [(2.5, 1, "in")], id="after-1.5-s-hidden: counted once"),
        pytest.param(3, 0.3, [(2.5, 1, "in"), (3.2, 2, "in")], id="another-person-farther-along-the-line: both"),
    ],
)
def test_a_track_that_continues_one_which_just_crossed_is_not_counted_again(
    gap: int, u_shift: float, expected: list[tuple[float, int, str]]
) -> None:
    """Track 1 walks in through the door (counted), is lost just past the line, and the same walk resumes as track 2
    (the tracker did not re-link it): the back-projection of track 2 finds track 1's crossing, same way and place,
    and counts nothing. A track born as far along the line as another person would be is counted."""
    line = LineCounter("door", "cam-1", *DOOR, INSIDE)
    frames: list[dict[int, tuple[float, float]]] = [{}] * 20
    frames += [{1: (0.5, 0.30 + 0.05 * f)} for f in range(9)]  # crosses y 0.5 between its frames 4 and 5
    frames += [{}] * gap
    frames += [{2: (0.5 + u_shift, 0.30 + 0.05 * f)} for f in range(9 + gap, 21 + gap)]
    assert _feed(line, frames) == expected


@pytest.mark.parametrize(
    ("box", "at_edge"),
    [
        ([300, 200, 340, 300], False),
        ([10, 200, 50, 300], True),  # left
        ([940, 200, 980, 300], True),  # right (W = 1000)
        ([300, 20, 340, 120], True),  # top
        ([300, 380, 340, 480], True),  # bottom (H = 500)
    ],
)
def test_at_edge_on_every_side(box: list[float], at_edge: bool) -> None:
    from actors.lines import _at_edge

    assert _at_edge(np.array(box, np.float64), W, H) is at_edge
