"""This node's session in the DCS as the HA loop keeps it at every tick (:mod:`failover.loop`), in this order:

1. renew the session lease; the moment the request is *sent* becomes the fence's renewal time (``renewed``), pushed
   to the runner (the fence deadline is ``0.8 x ttl`` after it);
2. time the renewal: its round trip (``renew_rtt``) and the time since the previous successful one was sent
   (``renew_gap``), for the soak (:mod:`failover.timing`);
3. write the member key (its create revision is the node's ``session``);
4. read the cluster (``last_cluster``: the last one read, kept while etcd cannot be read).

A lease found expired means a new session: ``on_lost`` runs before anything else (the loop stops its cameras).
Any ``DCSError`` ends the refresh and is returned as the error the tick decides on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cluster.errors import DCSError
from failover.dcs import AbstractDCS, Cluster, Member
from failover.fence import Fenced
from failover.timing import Durations

if TYPE_CHECKING:
    from failover.loop import Clock


class Lease:
    """The session lease, the member key and the last cluster read: :meth:`refresh`, :meth:`renewed`."""

    def __init__(self, dcs: AbstractDCS, runner: Fenced, clock: Clock) -> None:
        self.dcs = dcs
        self.runner = runner
        self.clock = clock
        self.session = 0
        self.last_renewal = float("-inf")
        self.last_renewal_sent = float("-inf")
        self.renew_rtt = Durations()  # how long each successful renewal request took
        self.renew_gap = Durations()  # time between the sends of two successive successful renewals (the fence's)
        self.last_cluster: Cluster | None = None

    def refresh(self, member: Callable[[], Member], on_lost: Callable[[], None]) -> tuple[Cluster | None, str]:
        """Renew, time, write ``member()``, read: (the cluster, "") or (None, the DCS error)."""
        sent = self.clock.monotonic()
        try:
            alive = self.dcs.renew()
            if not alive and self.session:
                on_lost()
            self.renewed(sent)
            self._time_renewal(sent)
            self.session = self.dcs.touch_member(member())
            cluster = self.dcs.get_cluster()
        except DCSError as exc:
            return None, str(exc)
        self.last_cluster = cluster
        return cluster, ""

    def renewed(self, at: float) -> None:
        """The lease counts as renewed at ``at`` (a renewal sent then, or a quorum confirmed out: the loop's rule 1)."""
        self.last_renewal = at
        self.runner.renewed(at)

    def _time_renewal(self, sent: float) -> None:
        now = self.clock.monotonic()
        self.renew_rtt.add(now - sent)
        if self.last_renewal_sent > float("-inf"):
            self.renew_gap.add(sent - self.last_renewal_sent)
        self.last_renewal_sent = sent
