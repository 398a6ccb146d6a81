"""What a node says about itself at every tick of the HA loop (:mod:`failover.loop`): its health verdict and its
member key.

- The verdict comes from ``source`` (the health monitor's latest verdict, :mod:`cluster.health`), read at the start
  of every tick; it must not block. A source that raises keeps the last verdict (logged with its traceback); a
  change of verdict is logged once, with its reasons. Without a source the node stays as healthy as it was built.
- The member key carries the verdict, the capacity, the cameras running here (sorted), the loop's mode (``normal``,
  ``failsafe`` or ``fenced``; any other mode is published as ``normal``), the reasons, the cameras whose source
  fails from this node, and the wall clock (rounded to the millisecond: the peer tells a live key by it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from failover.dcs import Member

log = logging.getLogger("failover.loop")  # the lines the loop wrote before the split keep its name

PUBLISHED_MODES = ("normal", "failsafe", "fenced")


@dataclass(frozen=True)
class HealthReport:
    """A node's health as its probes measured it (:mod:`cluster.health`), read by the loop at every tick.

    ``healthy`` is the verdict after hysteresis; ``reasons`` say why (one sentence per probe that failed or that is
    reported without counting); ``failing`` names the cameras whose source fails from this node (not its fault)."""

    healthy: bool = True
    reasons: tuple[str, ...] = ()
    failing: tuple[str, ...] = ()


class SelfReport:
    """The node's verdict (:meth:`read`) and its member key (:meth:`member`)."""

    def __init__(
        self,
        name: str,
        capacity: int,
        healthy: bool = True,
        source: Callable[[], HealthReport] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.healthy = healthy
        self.source = source
        self.health = HealthReport(healthy)
        self.wall = wall

    def read(self) -> None:
        """Take the source's latest verdict (module rules)."""
        if self.source is None:
            return
        try:
            report = self.source()
        except Exception:  # a broken probe must not stop the tick: keep the last verdict
            log.exception("%s: reading the health verdict failed; keeping the last one", self.name)
            return
        if report.healthy != self.healthy:
            log.warning(
                "%s: now %s: %s",
                self.name,
                "healthy" if report.healthy else "UNHEALTHY",
                "; ".join(report.reasons) or "every probe passes",
            )
        self.health = report
        self.healthy = report.healthy

    def member(self, running: set[str], mode: str) -> Member:
        """The member key for this tick: the cameras ``running`` here, the loop's ``mode``."""
        return Member(
            self.name,
            self.healthy,
            self.capacity,
            tuple(sorted(running)),
            mode=mode if mode in PUBLISHED_MODES else "normal",
            reasons=self.health.reasons,
            failing=self.health.failing,
            wall=round(self.wall(), 3),
        )
