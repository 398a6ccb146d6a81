"""Polygon zones with enter/exit events and dwell time (after supervision's ``PolygonZone.trigger``). Pure module.

Rules:

- The polygon is in normalised coordinates (x / frame width, y / frame height); a tracked anchor (its feet by
  default) inside it, by the even-odd rule, is inside the zone. Only tracked rows (``tracker_id >= 0``) count.
- A track seen inside while it has no open visit starts one: a ``zone_enter`` event at once, at that frame's ts.
- A visit ends when the track has been outside, or unseen, for *more than* ``exit_grace_s`` since it was last seen
  inside: a brief exit or a lost detection no longer than the grace does not split the visit. The ``zone_exit``
  event carries the *last time seen inside* as its ts (not the time the grace ran out) and
  ``dwell_s = exit ts - enter ts``. The grace is checked at every frame for the tracks not inside, so only a
  stalled camera (no frame at all for longer than the grace) can bring back a track with its visit still open: the
  visit goes on, as the track did (time without frames is not evidence that the person left).
- A track removed by the tracker ends its visit at once (``close``); ``finish`` ends every open visit (end of the
  stream or the camera stopped); both at the last time seen inside.
- Every visit is emitted whatever its length: ``min_dwell_s`` is kept on the zone for the KPI views, which filter
  short visits by ``dwell_s``, so that changing it never rewrites what was recorded and enter/exit always pair up.
- ``occupancy`` is the number of open visits: tracks inside, or outside for no longer than the grace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from actors.detections import Detections
from actors.events import ZONE_ENTER, ZONE_EXIT, Event

log = logging.getLogger(__name__)

EPS_S = 1e-6  # time comparisons tolerate the rounding of epoch-second floats (about 2e-7 s today)

Point = tuple[float, float]


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points (N, 2) for one polygon (K, 2); returns (N,) booleans."""
    if len(points) == 0:
        return np.zeros(0, bool)
    x, y = points[:, 0][:, None], points[:, 1][:, None]
    x1, y1 = polygon[:, 0][None, :], polygon[:, 1][None, :]
    x2, y2 = np.roll(polygon[:, 0], -1)[None, :], np.roll(polygon[:, 1], -1)[None, :]
    dy = np.where(y2 == y1, 1e-12, y2 - y1)
    crosses = ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / dy + x1)
    return np.asarray(np.sum(crosses, axis=1) % 2 == 1)


@dataclass
class _Visit:
    enter: float
    last_inside: float


class PolygonZone:
    """One zone of one camera; see the module docstring for when visits start and end."""

    def __init__(
        self,
        zone_id: str,
        camera_id: str,
        polygon: list[Point],
        min_dwell_s: float = 0.0,
        exit_grace_s: float = 1.0,
        anchor: str = "bottom_center",
    ) -> None:
        self.zone_id = zone_id
        self.camera_id = camera_id
        self.polygon = np.asarray(polygon, np.float64)
        if self.polygon.ndim != 2 or self.polygon.shape[1] != 2 or len(self.polygon) < 3:
            raise ValueError(f"zone {zone_id}: a polygon needs at least 3 (x, y) points, got {polygon!r}")
        if anchor not in ("bottom_center", "center"):
            raise ValueError(f"zone {zone_id}: unknown anchor {anchor!r}: expected 'bottom_center' or 'center'")
        if min_dwell_s < 0 or exit_grace_s < 0:
            raise ValueError(f"zone {zone_id}: min_dwell_s and exit_grace_s must be >= 0")
        self.min_dwell_s = min_dwell_s
        self.exit_grace_s = exit_grace_s
        self.anchor = anchor
        self._open: dict[int, _Visit] = {}

    @property
    def occupancy(self) -> int:
        return len(self._open)

    def open_ids(self) -> list[int]:
        """Track ids with an open visit."""
        return sorted(self._open)

    def _exit(self, tid: int) -> Event:
        visit = self._open.pop(tid)
        dwell = round(visit.last_inside - visit.enter, 6)
        log.debug("camera %s zone %s: track %d left after %.3f s", self.camera_id, self.zone_id, tid, dwell)
        return Event(visit.last_inside, self.camera_id, tid, ZONE_EXIT, zone_id=self.zone_id, dwell_s=dwell)

    def trigger(self, detections: Detections, ts: float, frame_w: int, frame_h: int) -> list[Event]:
        """Update the visits with this frame; return the enters and exits it caused (exits first, then by track)."""
        inside_now: set[int] = set()
        if len(detections):
            if frame_w <= 0 or frame_h <= 0:
                raise ValueError(f"zone {self.zone_id}: frame size must be positive, got {frame_w}x{frame_h}")
            pts = detections.anchors(self.anchor).astype(np.float64) / np.array([frame_w, frame_h], np.float64)
            inside = points_in_polygon(pts, self.polygon)
            inside_now = {int(t) for t, ok in zip(detections.tracker_id, inside, strict=True) if t >= 0 and ok}
        exits = [
            self._exit(tid)
            for tid in sorted(set(self._open) - inside_now)
            if ts - self._open[tid].last_inside > self.exit_grace_s + EPS_S
        ]
        enters: list[Event] = []
        for tid in sorted(inside_now):
            visit = self._open.get(tid)
            if visit is None:
                self._open[tid] = _Visit(ts, ts)
                enters.append(Event(ts, self.camera_id, tid, ZONE_ENTER, zone_id=self.zone_id))
            else:
                visit.last_inside = ts
        return exits + enters

    def close(self, track_ids: list[int], ts: float | None = None) -> list[Event]:
        """End the visits of tracks the tracker removed, at their last time seen inside (``ts`` is not used)."""
        return [self._exit(t) for t in sorted({int(t) for t in track_ids}) if t in self._open]

    def finish(self) -> list[Event]:
        """End every open visit (end of stream), at the last time each track was seen inside."""
        return [self._exit(t) for t in sorted(self._open)]
