"""The leader key as one node holds it (:mod:`failover.loop`), and the writes only a leader makes.

- ``leader`` is what this node answers as its leadership (``Node.live_role``): set when it takes the key or finds it
  leads, and set to None *before* the key is deleted (a release, a switchover, a shutdown): once the key is gone the
  peer may take it at once, and both nodes must never say "leader" at the same moment.
- Leading a cluster: acknowledge a switchover request that asked for nothing this node can do (or that it is the
  result of) by clearing it; write the decided assignment in a transaction on the leader key's token (refused when
  the key no longer has it: this node then leads nothing and starts nothing); clear a rebalance request once its
  assignment is written.
- A release for a switchover keeps the switchover key: while it names this node as the one that handed over, this
  node does not take the key straight back at its next tick; the new leader clears it.
- Every DCS call may raise ``DCSError`` (the caller decides what to run then), except the release on shutdown,
  which logs it: the lease expiry releases the key anyway.
"""

from __future__ import annotations

import logging

from cluster.errors import DCSError
from failover.dcs import AbstractDCS, Assignment, Cluster, Leader

log = logging.getLogger("failover.loop")  # the lines the loop wrote before the split keep its name


class Leadership:
    """This node's hold on the leader key: :meth:`acquire`, :meth:`lead`, :meth:`release`, :meth:`hand_over`,
    :meth:`give_up`."""

    def __init__(self, dcs: AbstractDCS, name: str) -> None:
        self.dcs = dcs
        self.name = name
        self.leader: Leader | None = None

    def acquire(self) -> Leader | None:
        """Try to take the leader key; None when another node took it first."""
        leader = self.dcs.attempt_to_acquire_leader(self.name)
        if leader is not None:
            self.leader = leader
            log.info("%s: acquired leadership (token %d)", self.name, leader.token)
        return leader

    def lead(self, cluster: Cluster, leader: Leader, assignment: Assignment | None) -> bool:
        """Act as ``leader`` of ``cluster`` (module rules); False when the assignment was refused."""
        self.leader = leader
        sw = cluster.switchover
        if sw is not None:
            if sw.candidate == self.name or sw.leader not in (None, self.name):
                log.info("%s: switchover to this node done (token %d)", self.name, leader.token)
            else:
                log.info("%s: switchover asked for but no other healthy member: staying leader", self.name)
            self.dcs.clear_switchover()
        if assignment is None:
            return True
        if not self.dcs.write_assignment(assignment):
            log.warning(
                "%s: assignment refused: the leader key no longer has token %d; starting nothing",
                self.name,
                assignment.token,
            )
            self.leader = None
            return False
        if cluster.rebalance:
            self.dcs.set_rebalance(False)
        return True

    def release(self, leader: Leader) -> None:
        """Give the key up for the switchover the decision saw (the switchover key stays: module rules)."""
        self.leader = None
        if self.dcs.release_leader(leader):
            log.info("%s: released leadership (token %d) for the switchover", self.name, leader.token)

    def hand_over(self, to: str | None) -> bool:
        """As leader: ask for a switchover (to ``to`` or any healthy member), then delete the key now. False (and
        nothing done) when this node does not lead."""
        if self.leader is None:
            return False
        self.dcs.request_switchover(to, leader=self.name)
        leader, self.leader = self.leader, None  # no longer "leader" (live_role) before the key goes
        if self.dcs.release_leader(leader):
            log.info("%s: released leadership (token %d) for a switchover", self.name, leader.token)
        return True

    def give_up(self, release: bool = True) -> None:
        """Stop answering "leader"; with ``release``, delete the key at once (a failure is logged)."""
        leader, self.leader = self.leader, None  # no longer "leader" (live_role) before the key goes
        if release and leader is not None:
            try:
                self.dcs.release_leader(leader)
            except DCSError as exc:
                log.warning("%s: releasing leadership on shutdown failed: %s", self.name, exc)
