"""Per-camera analytics: tracker, then lines, then zones; removed tracks close their visits. Pure module.

Order within one frame (``process``):

1. the tracker turns detections into confirmed, matched tracks (``tracker_id`` set);
2. every line counts its crossings, then every zone its enters and exits, from those tracks;
3. tracks the tracker removed in this update (lost longer than ``max_lost_s``) close their open visits in every
   zone and are forgotten by every line.

The events of one call are sorted by ts (stable: equal ts keep the order above). A zone exit carries the last time
the track was seen inside, so it can be earlier than the frame that caused it; so does a line crossing, which is
final ``confirm_s`` (0.5 s) after the frame where it happened and keeps that frame's ts (``actors.lines``). A
removed track's pending crossings are returned at once, and ``finish`` returns every pending one. Zones (and so
live occupancy) are not delayed. The same frames and timestamps always give the same events.
"""

from __future__ import annotations

import logging

from actors.detections import Detections
from actors.events import Event
from actors.lines import LineCounter
from actors.tracking import ByteTracker
from actors.zones import PolygonZone

log = logging.getLogger(__name__)


class CameraAnalytics:
    """The tracker, lines and zones of one camera, fed one frame at a time."""

    def __init__(
        self, camera_id: str, tracker: ByteTracker, lines: list[LineCounter], zones: list[PolygonZone]
    ) -> None:
        self.camera_id = camera_id
        self.tracker = tracker
        self.lines = list(lines)
        self.zones = list(zones)
        owners = [(f"line {x.line_id}", x.camera_id) for x in self.lines] + [
            (f"zone {z.zone_id}", z.camera_id) for z in self.zones
        ]
        for what, owner in owners:
            if owner != camera_id:
                raise ValueError(f"camera {camera_id}: {what} belongs to camera {owner}")

    @property
    def occupancy(self) -> dict[str, int]:
        """Open visits per zone id."""
        return {z.zone_id: z.occupancy for z in self.zones}

    def process(self, detections: Detections, ts: float, frame_w: int, frame_h: int) -> tuple[Detections, list[Event]]:
        """One frame: returns the tracked detections and the events they caused, sorted by ts."""
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
                events.extend(line.forget(removed))
        events.sort(key=lambda e: e.ts)
        return tracked, events

    def finish(self, ts: float) -> list[Event]:
        """End of stream at ``ts``: close every open visit and start over.

        Lines forget their tracks and the tracker drops its tracks but keeps counting ids, so frames processed after
        ``finish`` (a restarted source) never reuse a track id nor re-enter a zone for a visit already closed.
        """
        events: list[Event] = []
        for line in self.lines:
            events.extend(line.flush())
        for zone in self.zones:
            events.extend(zone.finish())
        for line in self.lines:
            line.reset()
        self.tracker.reset(keep_ids=True)
        events.sort(key=lambda e: e.ts)
        log.debug("camera %s: analytics finished at %.3f with %d open visits closed", self.camera_id, ts, len(events))
        return events
