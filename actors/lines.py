"""Counting lines with an in-direction and hysteresis (after supervision's ``LineZone.trigger``). Pure module.

Rules:

- Coordinates are normalised: x / frame width, y / frame height, 0..1. The line is the *segment* ``start``-``end``;
  the anchor of each tracked box (its feet by default) is tested. Distances are measured in these normalised units.
- Only tracked rows count (``tracker_id >= 0``; the tracker returns confirmed tracks only).
- Each track has a *definite side*: the side of the line its anchor was last seen on while farther than
  ``hysteresis`` from the (infinite) line, with the point where it was seen there. A point inside that dead band
  changes nothing, so someone lingering or jittering on the line counts once (when they finally leave the band on
  the other side) or not at all (when they go back to the side they came from).
- A track's first definite side is only recorded: appearing on one side is not a crossing, except as below.
- A crossing counts when the definite side flips and the track's path meets the segment, extended by
  ``hysteresis`` beyond each end. The path is the least-squares straight walk ``p(t) = a + b t`` through the
  track's anchors from ``fit_s`` (default ``FIT_S`` = 1 s) before the flip to the moment the crossing is decided
  (``confirm_s`` after it), with the last definite point before the flip always among them; where that walk meets
  the line is where the crossing is placed. A detector's box wobbles by a few pixels from frame to frame, and the
  straight move between two single points (the rule before issue 14, still used when the fit has fewer than 3
  points or does not cross the line) decided from that noise whether someone passing near an end crossed. A fast
  walker who jumps the band between two frames counts; walking around the end of the line does not (the side is
  then updated without a count).
- **Born in view** (``back_s``, default ``BACK_S`` = 1 s): a track first seen away from the frame's edges (its box
  farther than one box width from every edge) and later than ``back_s`` after the stream's first frame, is fitted
  over its first ``BIRTH_FIT_S`` (0.5 s) as a straight walk and projected ``back_s`` before its birth. When that
  point lies beyond the dead band on the other side of the track's first definite side, and the move from it to
  the first definite point meets the segment, the person crossed while unseen (hidden behind another person the
  moment they crossed, or stepping out of a door the line is drawn across): one crossing, stamped at the birth and
  returned ``BIRTH_FIT_S`` after it. Someone standing still, walking along the line, or born on the side they walk
  away into more than ``back_s`` of walking from the line is not counted; people entering at a frame edge never
  are (the door of a camera that sees only the inside is at the edge: they are not inferred to have crossed). Nor
  is a track that continues one which crossed the same way within ``FRAGMENT_S`` (plus ``back_s``) before, at most
  ``FRAGMENT_U`` along the line from it: the same person, lost just past the line (stopped behind someone, where
  the tracker's re-linking, which predicts a walk going on, missed them), already counted.
- Moving to the side of ``in_point`` is ``"in"``, the other way ``"out"``; every flip is one event, so in then out
  counts one of each, unless it happens within ``confirm_s``.
- **Confirmation delay** (``confirm_s``, default ``CONFIRM_S`` = 0.5 s): a crossing is final, and returned, at the
  first frame at least ``confirm_s`` after it; a track that flips back across the line before then cancels it
  (neither crossing counts). This is what stops a detector's jitter from counting someone who stands on a line,
  or whose box flickers across it, as in-out pairs. The event keeps the time of the crossing (the frame where the
  definite side flipped), so it is stamped up to ``confirm_s`` plus a frame earlier than the call that returns it;
  a track the tracker removes (``forget``) and the end of the stream (``flush``) decide its pending crossings at
  once. ``confirm_s`` 0 counts at the flip, as before. Measured on random lines of PETS09-S2L1 (tuning seeds,
  docs/accuracy.md): 0.5, 0.8 and 1.0 s give the same counts; 0.5 keeps the wait short.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from actors.detections import Detections
from actors.events import LINE_CROSS, Event

log = logging.getLogger(__name__)

Point = tuple[float, float]
CONFIRM_S = 0.5  # see the module docstring: seconds before a crossing is final
FIT_S = 1.0  # see the module docstring: seconds of a track's path before a flip fitted to place the crossing
BACK_S = 1.0  # see the module docstring: how far back a track born away from the frame's edges is projected
BIRTH_FIT_S = 0.5  # seconds of a new track's first motion fitted for that projection
BIRTH_GIVE_UP_S = 2.0  # a new track still inside the dead band this long after its birth is not projected
FRAGMENT_S = 2.0  # a crossing this long (plus back_s) before a birth, nearby, may be the same person's: see below
FRAGMENT_U = 0.1  # "nearby": this far apart along the line at most (normalised, about a person's width or two)


@dataclass
class _Candidate:
    """A flip of a track's definite side, waiting for ``confirm_s``: its event, the definite points before and
    after the flip, and the track's anchors from ``fit_s`` before the flip on (grown until it is decided)."""

    event: Event
    before: np.ndarray
    after: np.ndarray
    points: list[tuple[float, np.ndarray]]


def _at_edge(box: np.ndarray, w: int, h: int) -> bool:
    """Is the box within one box width of an edge of the frame (someone who may have just walked into view)?"""
    m = float(box[2] - box[0])
    return bool(box[0] < m or box[1] < m or box[2] > w - m or box[3] > h - m)


@dataclass
class _Birth:
    """A track first seen away from the frame's edges: when, its anchors since, and its first definite side."""

    ts: float
    points: list[tuple[float, np.ndarray]]
    first: tuple[int, np.ndarray] | None = None


class LineCounter:
    """One counting line of one camera; ``in_count`` and ``out_count`` are the totals since construction."""

    def __init__(
        self,
        line_id: str,
        camera_id: str,
        start: Point,
        end: Point,
        in_point: Point,
        hysteresis: float = 0.02,
        anchor: str = "bottom_center",
        confirm_s: float = CONFIRM_S,
        fit_s: float = FIT_S,
        back_s: float = BACK_S,
    ) -> None:
        self.line_id = line_id
        self.camera_id = camera_id
        self.start = np.asarray(start, np.float64).reshape(2)
        self.end = np.asarray(end, np.float64).reshape(2)
        self.hysteresis = float(hysteresis)
        self.anchor = anchor
        if anchor not in ("bottom_center", "center"):
            raise ValueError(f"line {line_id}: unknown anchor {anchor!r}: expected 'bottom_center' or 'center'")
        if self.hysteresis < 0:
            raise ValueError(f"line {line_id}: hysteresis must be >= 0, got {hysteresis}")
        self._dir = self.end - self.start
        self.length = float(np.hypot(*self._dir))
        if self.length == 0:
            raise ValueError(f"line {line_id}: start and end are the same point {tuple(start)}")
        side = self._signed(np.asarray(in_point, np.float64).reshape(2))
        if abs(side) < 1e-9:
            raise ValueError(f"line {line_id}: in_point {tuple(in_point)} lies on the line; it must be on the in side")
        self.in_sign = 1 if side > 0 else -1
        self.confirm_s = float(confirm_s)
        if self.confirm_s < 0:
            raise ValueError(f"line {line_id}: confirm_s must be >= 0, got {confirm_s}")
        self.fit_s = float(fit_s)
        self.back_s = float(back_s)
        if self.fit_s < 0 or self.back_s < 0:
            raise ValueError(f"line {line_id}: fit_s and back_s must be >= 0, got {fit_s}, {back_s}")
        self._last: dict[int, tuple[int, np.ndarray, float]] = {}  # track id -> (definite side, anchor there, ts)
        self._born: dict[int, _Birth] = {}  # track id -> its birth, until the back-projection is decided
        self._seen: set[int] = set()  # tracks seen since they were born (forgotten when the tracker removes them)
        self._t_start: float | None = None  # the first frame this line saw (the stream's start)
        self._trail: dict[int, list[tuple[float, np.ndarray]]] = {}  # track id -> its anchors of the last fit_s
        self._pending: dict[int, list[_Candidate]] = {}  # track id -> crossings not final yet (confirm_s)
        # Crossings counted lately: (ts, track id, direction, where along the line), for ``_back_project``.
        self._recent: list[tuple[float, int, str, float]] = []
        self.in_count = 0
        self.out_count = 0

    def _signed(self, p: np.ndarray) -> float:
        """Signed distance from ``p`` to the infinite line; > 0 on the left of start -> end (y pointing down)."""
        d = self._dir
        return float((d[0] * (p[1] - self.start[1]) - d[1] * (p[0] - self.start[0])) / self.length)

    def _along(self, p: np.ndarray, q: np.ndarray) -> float:
        """Where the move ``p`` -> ``q`` (on opposite sides) meets the line: the distance along it from its start."""
        sp, sq = self._signed(p), self._signed(q)
        x = p + sp / (sp - sq) * (q - p)
        return float(np.dot(x - self.start, self._dir)) / self.length

    def _through_segment(self, p: np.ndarray, q: np.ndarray) -> bool:
        """Does the move ``p`` -> ``q`` (on opposite sides) meet the segment, extended by ``hysteresis``?"""
        sp, sq = self._signed(p), self._signed(q)
        x = p + sp / (sp - sq) * (q - p)  # where the move meets the infinite line
        return self._on_segment(x)

    def _on_segment(self, x: np.ndarray) -> bool:
        u = float(np.dot(x - self.start, self._dir)) / self.length  # distance along the line from start
        return -self.hysteresis <= u <= self.length + self.hysteresis

    def _fitted_through_segment(self, c: _Candidate) -> bool:
        """Does the track's path around the flip, fitted as a straight walk, meet the (extended) segment?

        The anchors of ``c`` (from ``fit_s`` before the flip to the decision) are fitted by least squares as
        ``p(t) = a + b t``; the walk meets the infinite line where its signed distance is 0, a time clamped to the
        span of the points; the segment test is made there. A fit without motion across the line (all points at the
        same time, or no change of signed distance), and ``fit_s`` 0, fall back to the straight move between the two
        definite points (the rule before issue 14).
        """
        t = np.array([ts for ts, _ in c.points], np.float64)
        if self.fit_s == 0 or len(t) < 3 or float(np.ptp(t)) <= 0:
            return self._through_segment(c.before, c.after)
        pts = np.stack([p for _, p in c.points])
        t = t - t.mean()
        coef = np.polyfit(t, pts, 1)  # (2, 2): slope row, intercept row
        b, a = coef[0], coef[1]
        s_a, s_b = self._signed(a), float(np.dot([-self._dir[1], self._dir[0]], b)) / self.length
        if (s_a + s_b * t[0] > 0) == (s_a + s_b * t[-1] > 0):
            return self._through_segment(c.before, c.after)  # the fitted walk does not cross the line
        t_cross = float(np.clip(-s_a / s_b, t[0], t[-1]))
        return self._on_segment(a + b * t_cross)

    def trigger(self, detections: Detections, ts: float, frame_w: int, frame_h: int) -> list[Event]:
        """Update the tracks' sides with this frame; return the crossings that became final, sorted by ts."""
        if self._t_start is None:
            self._t_start = ts
        events = self._finalise(ts)
        if len(detections) == 0:
            return events
        if frame_w <= 0 or frame_h <= 0:
            raise ValueError(f"line {self.line_id}: frame size must be positive, got {frame_w}x{frame_h}")
        pts = detections.anchors(self.anchor).astype(np.float64) / np.array([frame_w, frame_h], np.float64)
        births: list[int] = []
        for i in np.argsort(detections.tracker_id, kind="stable"):
            tid = int(detections.tracker_id[i])
            if tid < 0:
                continue
            p = pts[i]
            if tid not in self._seen:
                self._seen.add(tid)
                born_in_view = ts - self._t_start >= self.back_s and not _at_edge(detections.xyxy[i], frame_w, frame_h)
                if self.back_s > 0 and born_in_view:
                    self._born[tid] = _Birth(ts, [])
            birth = self._born.get(tid)
            if birth is not None:
                birth.points.append((ts, p))
                births.append(tid)
            trail = self._trail.setdefault(tid, [])
            trail.append((ts, p))
            while ts - trail[0][0] > self.fit_s + 1e-6:
                trail.pop(0)
            for c in self._pending.get(tid, []):
                c.points.append((ts, p))
            s = self._signed(p)
            if abs(s) <= self.hysteresis:
                continue  # dead band: the definite side does not change
            side = 1 if s > 0 else -1
            prev = self._last.get(tid)
            if prev is None and birth is not None:
                birth.first = (side, p)
            self._last[tid] = (side, p, ts)
            if prev is None or prev[0] == side:
                continue
            direction = "in" if side == self.in_sign else "out"
            event = Event(ts, self.camera_id, tid, LINE_CROSS, line_id=self.line_id, direction=direction)
            points = list(trail)
            if prev[2] < trail[0][0]:
                points.insert(0, (prev[2], prev[1]))  # the definite point before the flip is always part of it
            candidate = _Candidate(event, prev[1], p, points)
            pending = self._pending.setdefault(tid, [])
            if pending and pending[-1].event.direction != direction:
                pending.pop()  # back across within confirm_s: neither crossing counts
            else:
                pending.append(candidate)
            if not pending:
                del self._pending[tid]
        for tid in births:
            b = self._born[tid]
            if ts - b.ts >= BIRTH_FIT_S - 1e-6 and b.first is not None:
                del self._born[tid]
                events.extend(self._back_project(tid, b))
            elif ts - b.ts > BIRTH_GIVE_UP_S:
                del self._born[tid]
        if self.confirm_s == 0:
            events.extend(self._finalise(ts))
        events.sort(key=lambda e: e.ts)
        return events

    def _back_project(self, tid: int, b: _Birth) -> list[Event]:
        """A track born away from the frame's edges, moving away from the line: did it come from the other side?

        Its first ``BIRTH_FIT_S`` of anchors are fitted as a straight walk ``p(t) = a + b t`` and projected
        ``back_s`` before its birth; when that point is beyond the dead band on the other side of its first definite
        side, and the move from it to the first definite point meets the segment, the track crossed while unseen
        (hidden behind someone, or stepping out of a door on the line): one crossing, stamped at the birth.
        """
        t = np.array([ts for ts, _ in b.points], np.float64)
        if len(t) < 3 or float(np.ptp(t)) < 0.2 or b.first is None:
            return []
        pts = np.stack([p for _, p in b.points])
        slope, icpt = np.polyfit(t - b.ts, pts, 1)
        back = icpt - slope * self.back_s
        s_back = self._signed(back)
        side = b.first[0]
        if s_back * side >= 0 or abs(s_back) <= self.hysteresis or not self._through_segment(back, b.first[1]):
            return []
        direction = "in" if side == self.in_sign else "out"
        # The same person as a track that crossed here just before and was lost (it stopped behind someone, and the
        # tracker's re-linking, which predicts it walking on, missed it): that crossing was counted already.
        u = self._along(back, b.first[1])
        for i, (ts, other, d, u_other) in enumerate(self._recent):
            if (
                other != tid
                and d == direction
                and ts >= b.ts - self.back_s - FRAGMENT_S
                and abs(u - u_other) <= FRAGMENT_U
            ):
                del self._recent[i]  # one crossing explains one new track
                log.debug(
                    "camera %s line %s: track %d born past the line continues track %d (crossed at %.1f): not counted",
                    self.camera_id, self.line_id, tid, other, ts,
                )  # fmt: skip
                return []
        e = Event(b.ts, self.camera_id, tid, LINE_CROSS, line_id=self.line_id, direction=direction)
        self._count(e)
        return [e]

    def _count(self, e: Event) -> None:
        if e.direction == "in":
            self.in_count += 1
        else:
            self.out_count += 1

    def _finalise(self, ts: float | None) -> list[Event]:
        """Crossings pending for at least ``confirm_s`` at ``ts`` (None: all of them) are decided; those whose fitted
        path meets the segment become final and are returned."""
        out: list[Event] = []
        for tid in sorted(self._pending):
            pending = self._pending[tid]
            while pending and (ts is None or ts - pending[0].event.ts >= self.confirm_s - 1e-6):
                out.extend(self._decide(pending.pop(0)))
            if not pending:
                del self._pending[tid]
        return out

    def _decide(self, c: _Candidate) -> list[Event]:
        if not self._fitted_through_segment(c):
            log.debug(
                "camera %s line %s: track %d changed side beside the segment",
                self.camera_id,
                self.line_id,
                c.event.track_id,
            )
            return []
        self._count(c.event)
        e = c.event
        self._recent = [r for r in self._recent if r[0] >= e.ts - self.back_s - FRAGMENT_S - 5.0][-64:]
        self._recent.append((e.ts, e.track_id, str(e.direction), self._along(c.before, c.after)))
        return [c.event]

    def forget(self, track_ids: list[int]) -> list[Event]:
        """Drop the state of tracks the tracker removed; their pending crossings are decided and returned."""
        out: list[Event] = []
        for t in sorted(int(t) for t in track_ids):
            self._last.pop(t, None)
            self._trail.pop(t, None)
            self._born.pop(t, None)
            self._seen.discard(t)
            for c in self._pending.pop(t, []):
                out.extend(self._decide(c))
        return out

    def flush(self) -> list[Event]:
        """Every pending crossing becomes final now (end of stream)."""
        return self._finalise(None)

    def reset(self) -> None:
        """Forget every track (the counters are kept); pending crossings are dropped: call ``flush`` first.

        What comes next is a fresh start, like the stream's first frame: a track born within ``back_s`` of it is not
        projected back (after a fence pause or a restarted source, the person whose crossing was just counted and
        flushed would otherwise be counted again, stepping away from the line as a new track)."""
        self._t_start = None
        self._last.clear()
        self._trail.clear()
        self._born.clear()
        self._seen.clear()
        self._pending.clear()
        self._recent.clear()
