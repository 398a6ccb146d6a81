"""Counting lines with an in-direction and hysteresis (after supervision's ``LineZone.trigger``). Pure module.

Rules:

- Coordinates are normalised: x / frame width, y / frame height, 0..1. The line is the *segment* ``start``-``end``;
  the anchor of each tracked box (its feet by default) is tested. Distances are measured in these normalised units.
- Only tracked rows count (``tracker_id >= 0``; the tracker returns confirmed tracks only).
- Each track has a *definite side*: the side of the line its anchor was last seen on while farther than
  ``hysteresis`` from the (infinite) line, with the point where it was seen there. A point inside that dead band
  changes nothing, so someone lingering or jittering on the line counts once (when they finally leave the band on
  the other side) or not at all (when they go back to the side they came from).
- A track's first definite side is only recorded: appearing on one side is not a crossing.
- A crossing counts when the definite side flips and the straight move from the last definite point to the
  current one meets the segment, extended by ``hysteresis`` beyond each end. A fast walker who jumps the band
  between two frames counts; walking around the end of the line does not (the side is then updated silently).
- Moving to the side of ``in_point`` is ``"in"``, the other way ``"out"``; every flip is one event, so in then out
  counts one of each, unless it happens within ``confirm_s``.
- **Confirmation delay** (``confirm_s``, default ``CONFIRM_S`` = 0.5 s): a crossing is final, and returned, at the
  first frame at least ``confirm_s`` after it; a track that flips back across the line before then cancels it
  (neither crossing counts). This is what stops a detector's jitter from counting someone who stands on a line,
  or whose box flickers across it, as in-out pairs. The event keeps the time of the crossing (the frame where the
  definite side flipped), so it is stamped up to ``confirm_s`` plus a frame earlier than the call that returns it;
  a track the tracker removes (``forget``) and the end of the stream (``flush``) make its pending crossings final
  at once. ``confirm_s`` 0 counts at the flip, as before. Measured on random lines of PETS09-S2L1 (tuning seeds,
  docs/accuracy.md): 0.5, 0.8 and 1.0 s give the same counts; 0.5 keeps the wait short.
"""

from __future__ import annotations

import logging

import numpy as np

from actors.detections import Detections
from actors.events import LINE_CROSS, Event

log = logging.getLogger(__name__)

Point = tuple[float, float]
CONFIRM_S = 0.5  # see the module docstring: seconds before a crossing is final


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
        self._last: dict[int, tuple[int, np.ndarray]] = {}  # track id -> (definite side, anchor seen there)
        self._pending: dict[int, list[Event]] = {}  # track id -> crossings not final yet (confirm_s)
        self.in_count = 0
        self.out_count = 0

    def _signed(self, p: np.ndarray) -> float:
        """Signed distance from ``p`` to the infinite line; > 0 on the left of start -> end (y pointing down)."""
        d = self._dir
        return float((d[0] * (p[1] - self.start[1]) - d[1] * (p[0] - self.start[0])) / self.length)

    def _through_segment(self, p: np.ndarray, q: np.ndarray) -> bool:
        """Does the move ``p`` -> ``q`` (on opposite sides) meet the segment, extended by ``hysteresis``?"""
        sp, sq = self._signed(p), self._signed(q)
        x = p + sp / (sp - sq) * (q - p)  # where the move meets the infinite line
        u = float(np.dot(x - self.start, self._dir)) / self.length  # distance along the line from start
        return -self.hysteresis <= u <= self.length + self.hysteresis

    def trigger(self, detections: Detections, ts: float, frame_w: int, frame_h: int) -> list[Event]:
        """Update the tracks' sides with this frame; return the crossings that became final, sorted by ts."""
        events = self._finalise(ts)
        if len(detections) == 0:
            return events
        if frame_w <= 0 or frame_h <= 0:
            raise ValueError(f"line {self.line_id}: frame size must be positive, got {frame_w}x{frame_h}")
        pts = detections.anchors(self.anchor).astype(np.float64) / np.array([frame_w, frame_h], np.float64)
        for i in np.argsort(detections.tracker_id, kind="stable"):
            tid = int(detections.tracker_id[i])
            if tid < 0:
                continue
            p = pts[i]
            s = self._signed(p)
            if abs(s) <= self.hysteresis:
                continue  # dead band: the definite side does not change
            side = 1 if s > 0 else -1
            prev = self._last.get(tid)
            self._last[tid] = (side, p)
            if prev is None or prev[0] == side:
                continue
            if not self._through_segment(prev[1], p):
                log.debug(
                    "camera %s line %s: track %d changed side beside the segment", self.camera_id, self.line_id, tid
                )
                continue
            direction = "in" if side == self.in_sign else "out"
            event = Event(ts, self.camera_id, tid, LINE_CROSS, line_id=self.line_id, direction=direction)
            if self.confirm_s > 0:
                pending = self._pending.setdefault(tid, [])
                if pending and pending[-1].direction != direction:
                    pending.pop()  # back across within confirm_s: neither crossing counts
                else:
                    pending.append(event)
                continue
            self._count(event)
            events.append(event)
        events.sort(key=lambda e: e.ts)
        return events

    def _count(self, e: Event) -> None:
        if e.direction == "in":
            self.in_count += 1
        else:
            self.out_count += 1

    def _finalise(self, ts: float | None) -> list[Event]:
        """Crossings pending for at least ``confirm_s`` at ``ts`` (None: all of them) become final."""
        out: list[Event] = []
        for tid in sorted(self._pending):
            pending = self._pending[tid]
            while pending and (ts is None or ts - pending[0].ts >= self.confirm_s - 1e-6):
                e = pending.pop(0)
                self._count(e)
                out.append(e)
            if not pending:
                del self._pending[tid]
        return out

    def forget(self, track_ids: list[int]) -> list[Event]:
        """Drop the state of tracks the tracker removed; their pending crossings become final and are returned."""
        out: list[Event] = []
        for t in sorted(int(t) for t in track_ids):
            self._last.pop(t, None)
            for e in self._pending.pop(t, []):
                self._count(e)
                out.append(e)
        return out

    def flush(self) -> list[Event]:
        """Every pending crossing becomes final now (end of stream)."""
        return self._finalise(None)

    def reset(self) -> None:
        """Forget every track (the counters are kept); pending crossings are dropped: call ``flush`` first."""
        self._last.clear()
        self._pending.clear()
