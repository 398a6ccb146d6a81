"""Polygon zones with enter/exit events and dwell time (after supervision's ``PolygonZone.trigger``). Pure module.

Rules:

- A tracked anchor inside the polygon (normalised coordinates) starts a visit: a ``zone_enter`` event at once.
- The visit ends when the track has been outside, or unseen, for more than ``exit_grace_s``: a brief exit or a
  lost detection shorter than the grace does not split the visit. The ``zone_exit`` event carries the *last time
  seen inside* as its timestamp and ``dwell_s = exit - enter``.
- A track removed by the tracker ends its visit at once (``close``); ``finish`` ends every open visit (end of the
  stream or the camera stopped).
- Every visit is emitted whatever its length; ``min_dwell_s`` is applied by the KPI views, so that changing it
  never rewrites what was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.detections import Detections
from actors.events import ZONE_ENTER, ZONE_EXIT, Event

Point = tuple[float, float]


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points (N, 2) for one polygon (K, 2)."""
    x, y = points[:, 0][:, None], points[:, 1][:, None]
    x1, y1 = polygon[:, 0][None, :], polygon[:, 1][None, :]
    x2, y2 = np.roll(polygon[:, 0], -1)[None, :], np.roll(polygon[:, 1], -1)[None, :]
    crosses = ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / np.where(y2 - y1 == 0, 1e-12, y2 - y1) + x1)
    return np.asarray(np.sum(crosses, axis=1) % 2 == 1)


@dataclass
class _Visit:
    enter: float
    last_inside: float


class PolygonZone:
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
        if len(self.polygon) < 3:
            raise ValueError(f"zone {zone_id}: a polygon needs at least 3 points")
        self.min_dwell_s = min_dwell_s
        self.exit_grace_s = exit_grace_s
        self.anchor = anchor
        self._open: dict[int, _Visit] = {}

    @property
    def occupancy(self) -> int:
        return len(self._open)

    def _exit(self, tid: int, visit: _Visit) -> Event:
        return Event(
            visit.last_inside,
            self.camera_id,
            tid,
            ZONE_EXIT,
            zone_id=self.zone_id,
            dwell_s=round(visit.last_inside - visit.enter, 6),
        )

    def trigger(self, detections: Detections, ts: float, frame_w: int, frame_h: int) -> list[Event]:
        events: list[Event] = []
        inside_now: set[int] = set()
        if len(detections):
            pts = detections.anchors(self.anchor).astype(np.float64) / np.array([frame_w, frame_h], np.float64)
            inside = points_in_polygon(pts, self.polygon)
            for tid, ok in zip(detections.tracker_id, inside, strict=True):
                if tid >= 0 and ok:
                    inside_now.add(int(tid))
        for tid in sorted(inside_now):
            visit = self._open.get(tid)
            if visit is None:
                self._open[tid] = _Visit(ts, ts)
                events.append(Event(ts, self.camera_id, tid, ZONE_ENTER, zone_id=self.zone_id))
            else:
                visit.last_inside = ts
        for tid in sorted(set(self._open) - inside_now):
            visit = self._open[tid]
            if ts - visit.last_inside > self.exit_grace_s:
                events.append(self._exit(tid, self._open.pop(tid)))
        return events

    def close(self, track_ids: list[int], ts: float) -> list[Event]:
        """End the visits of tracks the tracker removed (exit at the last time seen inside)."""
        return [self._exit(int(t), self._open.pop(int(t))) for t in sorted(track_ids) if int(t) in self._open]

    def finish(self) -> list[Event]:
        return [self._exit(t, self._open.pop(t)) for t in sorted(self._open)]
