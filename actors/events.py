"""Visitor events produced by the analytics of one camera. Pure module."""

from __future__ import annotations

from dataclasses import dataclass

LINE_CROSS = "line_cross"
ZONE_ENTER = "zone_enter"
ZONE_EXIT = "zone_exit"
EVENT_KINDS = (LINE_CROSS, ZONE_ENTER, ZONE_EXIT)


@dataclass(frozen=True)
class Event:
    """One visitor event.

    ``ts`` is the UTC time of the frame, in seconds since the epoch. ``direction`` is ``"in"`` or ``"out"`` for
    line crossings. ``dwell_s`` is set on ``zone_exit`` (time between the enter and the exit of that track).
    """

    ts: float
    camera_id: str
    track_id: int
    kind: str
    line_id: str | None = None
    zone_id: str | None = None
    direction: str | None = None
    dwell_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"Event.kind {self.kind!r} is not one of {EVENT_KINDS}")
        if self.kind == LINE_CROSS and (self.line_id is None or self.direction not in ("in", "out")):
            raise ValueError("a line_cross event needs line_id and direction 'in' or 'out'")
        if self.kind in (ZONE_ENTER, ZONE_EXIT) and self.zone_id is None:
            raise ValueError(f"a {self.kind} event needs zone_id")
