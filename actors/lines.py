"""Counting lines with an in-direction and hysteresis (after supervision's ``LineZone.trigger``). Pure module.

Rules:

- Coordinates are normalised (0..1); the anchor of each tracked box (its feet by default) is tested.
- Each track has a *definite side*: the side of the line its anchor was last seen on while farther than
  ``hysteresis`` from the line. Points inside that dead band never change it, so someone lingering on the line or a
  flickering box counts once at most.
- A crossing counts when the definite side flips and the move from the last definite point to the current one
  passes through the segment (with a tolerance of ``hysteresis`` beyond its ends): walking around the end of a
  line is not a crossing. A fast walker who jumps the line between two frames still counts.
- Moving to the side of ``in_point`` is "in", the other way "out". Only tracked rows (tracker_id >= 0) count.
"""

from __future__ import annotations

import numpy as np

from actors.detections import Detections
from actors.events import LINE_CROSS, Event

Point = tuple[float, float]


class LineCounter:
    def __init__(
        self,
        line_id: str,
        camera_id: str,
        start: Point,
        end: Point,
        in_point: Point,
        hysteresis: float = 0.02,
        anchor: str = "bottom_center",
    ) -> None:
        self.line_id = line_id
        self.camera_id = camera_id
        self.a = np.asarray(start, np.float64)
        self.b = np.asarray(end, np.float64)
        self.hysteresis = hysteresis
        self.anchor = anchor
        d = self.b - self.a
        self.length = float(np.hypot(*d))
        if self.length == 0:
            raise ValueError(f"line {line_id}: start and end are the same point")
        self.in_sign = 1 if self._signed(np.asarray(in_point, np.float64)) > 0 else -1
        self._last: dict[int, tuple[int, np.ndarray]] = {}  # track -> (definite side, point there)
        self.in_count = 0
        self.out_count = 0

    def _signed(self, p: np.ndarray) -> float:
        """Signed distance of ``p`` to the (infinite) line, normalised units; > 0 on the left of start->end."""
        d = self.b - self.a
        return float((d[0] * (p[1] - self.a[1]) - d[1] * (p[0] - self.a[0])) / self.length)

    def _through_segment(self, p: np.ndarray, q: np.ndarray) -> bool:
        """Does the move p -> q cross the line within the segment (plus tolerance)?"""
        sp, sq = self._signed(p), self._signed(q)
        if sp == sq:
            return False
        t = sp / (sp - sq)
        x = p + t * (q - p)
        d = self.b - self.a
        u = float(np.dot(x - self.a, d) / (self.length**2))
        tol = self.hysteresis / self.length
        return -tol <= u <= 1 + tol

    def trigger(self, detections: Detections, ts: float, frame_w: int, frame_h: int) -> list[Event]:
        events: list[Event] = []
        if len(detections) == 0:
            return events
        pts = detections.anchors(self.anchor) / np.array([frame_w, frame_h], np.float32)
        for tid, p in zip(detections.tracker_id, pts.astype(np.float64), strict=True):
            if tid < 0:
                continue
            s = self._signed(p)
            if abs(s) <= self.hysteresis:
                continue  # in the dead band: the definite side does not change
            side = 1 if s > 0 else -1
            prev = self._last.get(int(tid))
            self._last[int(tid)] = (side, p)
            if prev is None or prev[0] == side:
                continue
            if not self._through_segment(prev[1], p):
                continue
            direction = "in" if side == self.in_sign else "out"
            if direction == "in":
                self.in_count += 1
            else:
                self.out_count += 1
            events.append(Event(ts, self.camera_id, int(tid), LINE_CROSS, line_id=self.line_id, direction=direction))
        return events

    def forget(self, track_ids: list[int]) -> None:
        for t in track_ids:
            self._last.pop(int(t), None)
