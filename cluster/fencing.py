"""The fence rule, in one place: a deadline on the monotonic clock that renewals only move forward.

Used by every runner: ``failover.fence.FencedRunner``, the node's ``cluster.camera_runner.RayCameraRunner`` (which
hands its deadline to its camera actors at each renewal) and each camera's ``actors.worker.CameraWorker`` (which
pauses by itself once the deadline passes). Pure and base-level: imports nothing of ours.
``docs/architecture.md`` (walk 2) lists every place the fencing token and this deadline are checked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Fence:
    """A deadline on the monotonic clock (shared by every process of the machine) that only moves forward.

    ``window``: ``fraction x ttl``, the time a renewal buys (None for a fence that is handed deadlines, as a camera
    worker is by its node). Before the first renewal the deadline is ``-inf``: nothing may run. Not locked: its owner
    holds its own lock around it.
    """

    def __init__(
        self, window: float | None = None, clock: Callable[[], float] = time.monotonic, deadline: float = -math.inf
    ) -> None:
        if window is not None and not (math.isfinite(window) and window > 0):
            raise ValueError(f"a fence window must be a positive number of seconds, got {window!r}")
        self.window = window
        self.clock = clock
        self.deadline = deadline

    def renewed(self, at: float) -> float:
        """A renewal whose request was *sent* at ``at``: the deadline becomes ``at + window`` unless it was later."""
        if self.window is None:
            raise ValueError("this fence is handed deadlines (extend), it has no window of its own")
        return self.extend(at + self.window)

    def extend(self, deadline: float) -> float:
        """Move the deadline to ``deadline`` if that is later (a late or repeated renewal never moves it back)."""
        if deadline > self.deadline:  # NaN never moves it
            self.deadline = deadline
        return self.deadline

    def expired(self, now: float | None = None) -> bool:
        """True once the clock reached the deadline (a clock that stalls keeps the answer it had)."""
        return (self.clock() if now is None else now) >= self.deadline

    def since_renewal(self, now: float) -> float:
        """Seconds since the renewal that set the deadline (needs a window)."""
        return now - (self.deadline - (self.window or 0.0))
