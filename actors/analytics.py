"""Per-camera analytics: tracker, then lines, then zones; removed tracks close their visits. Pure module."""

from __future__ import annotations

from actors.detections import Detections
from actors.events import Event
from actors.lines import LineCounter
from actors.tracking import ByteTracker
from actors.zones import PolygonZone


class CameraAnalytics:
    def __init__(
        self, camera_id: str, tracker: ByteTracker, lines: list[LineCounter], zones: list[PolygonZone]
    ) -> None:
        self.camera_id = camera_id
        self.tracker = tracker
        self.lines = lines
        self.zones = zones

    @property
    def occupancy(self) -> dict[str, int]:
        return {z.zone_id: z.occupancy for z in self.zones}

    def process(self, detections: Detections, ts: float, frame_w: int, frame_h: int) -> tuple[Detections, list[Event]]:
        tracked = self.tracker.update(detections, ts)
        events: list[Event] = []
        for line in self.lines:
            events.extend(line.trigger(tracked, ts, frame_w, frame_h))
        for zone in self.zones:
            events.extend(zone.trigger(tracked, ts, frame_w, frame_h))
        removed = list(self.tracker.removed_ids)
        if removed:
            for zone in self.zones:
                events.extend(zone.close(removed, ts))
            for line in self.lines:
                line.forget(removed)
        events.sort(key=lambda e: e.ts)
        return tracked, events

    def finish(self, ts: float) -> list[Event]:
        events: list[Event] = []
        for zone in self.zones:
            events.extend(zone.finish())
        events.sort(key=lambda e: e.ts)
        return events
