"""The HA loop: take a snapshot, ask ``decide``, apply the one action, log the reason, tell the runner what to run.

Each tick, in this order: renew the session lease (the moment the request is sent becomes the fence's renewal
time), write our member key (health, capacity, cameras running), read the cluster, decide, apply. Every DCS call may
raise ``DCSError``; the tick then decides on "etcd unreachable".

Fencing. A node runs a camera only under a valid token (see ``failover.decide``) and only while its fence deadline
(``0.8 x ttl`` after the last renewal, on the monotonic clock) has not passed. The deadline is enforced by
``FencedRunner``'s own timer thread, not by this loop, so a stuck loop still stops its cameras before its lease can
have expired and before anyone else may start them.

Etcd unreachable vs. "keep running on quorum loss" — how the two requirements are reconciled (Patroni's failsafe
mode is the reference: keep the primary only while every peer can be confirmed):

1. The lease cannot be renewed, and a majority of etcd members is *confirmed* out of any quorum: each either
   answers a direct status request and reports no raft leader, or refuses the TCP connection (no process listens).
   Then no majority can exist anywhere, nobody can create the leader key or write an assignment, and when a quorum
   comes back etcd extends every lease by a full TTL plus the election timeout — so no other node can take our
   cameras before we see the quorum again. The node keeps running the cameras it has, makes no new assignment,
   says "no quorum: keeping ..." in its log and reports ``mode: failsafe`` in its status. Each confirmation pushes
   the fence deadline like a renewal does (the confirmation is redone every tick).
2. Anything else — every endpoint times out, or only a minority answers, or the members that answer still see a
   raft leader (we are cut off from a cluster that works) — cannot be told apart from a partition in which the
   peer holds a quorum and is about to take our cameras. The node keeps its cameras until the fence deadline,
   then stops them all (``mode: fenced``), and starts nothing until it renews its lease again.

So "keep running on quorum loss" holds when the loss is visible (members down or leaderless), which is the case of
the witness and the peer's member failing; a silent network cut stops cameras instead of risking a double run.

The parts: :class:`HALoop` (this module) reads, decides and runs the ticks, and takes the operator's actions;
:mod:`failover.selfreport` what the node says about itself (health verdict, member key), :mod:`failover.lease` its
session (lease, member key written, cluster read, renewal times), :mod:`failover.apply` applying a decision with
:mod:`failover.leadership` (the leader key and the writes only a leader makes) and :mod:`failover.reconcile` (the
runner's cameras).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from cluster.errors import DCSError
from failover.apply import Applier
from failover.dcs import AbstractDCS, Cluster, Leader, Member, QuorumProbe
from failover.decide import Action, Decision, Snapshot, decide
from failover.fence import CameraRunner, Fenced, FencedRunner
from failover.leadership import Leadership
from failover.lease import Lease
from failover.reconcile import Reconciler
from failover.selfreport import HealthReport, SelfReport

log = logging.getLogger(__name__)

__all__ = ["Clock", "HALoop", "HealthReport", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class HALoop:
    """One node's HA loop. ``runner`` gets wrapped in an in-process ``FencedRunner`` unless it already fences.

    ``health`` (optional) is read at the start of every tick and must not block (it returns the latest verdict of
    probes that run elsewhere); its verdict goes into the member key and into the decision. Without it the node
    stays as healthy as ``healthy`` says."""

    def __init__(
        self,
        dcs: AbstractDCS,
        node_name: str,
        cameras: Sequence[str] | Mapping[str, float],
        capacity: int,
        runner: CameraRunner,
        clock: Clock | None = None,
        ttl: float = 2.0,
        loop_wait: float | None = None,
        full_fps: float = 15.0,
        healthy: bool = True,
        health: Callable[[], HealthReport] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 camera, got {capacity}")
        self.dcs = dcs
        self.name = node_name
        self.cameras: dict[str, float] = (
            dict(cameras) if isinstance(cameras, Mapping) else dict.fromkeys(cameras, full_fps)
        )
        self.capacity = capacity
        self.clock: Clock = clock or SystemClock()
        self.ttl = ttl
        self.loop_wait = loop_wait if loop_wait is not None else ttl / 5
        self.me = SelfReport(node_name, capacity, healthy, health, wall)
        self.own_fence: FencedRunner | None = None
        if isinstance(runner, Fenced):
            self.runner: Fenced = runner
        else:
            self.own_fence = FencedRunner(runner, ttl, node=node_name, monotonic=self.clock.monotonic)
            self.runner = self.own_fence
        self.lease = Lease(dcs, self.runner, self.clock)
        self.leadership = Leadership(dcs, node_name)
        self.reconciler = Reconciler(self.runner, node_name)
        self.applier = Applier(node_name, self.leadership, self.reconciler)
        self.renew_rtt = self.lease.renew_rtt  # how long each successful renewal request took
        self.renew_gap = self.lease.renew_gap  # time between the sends of two successive successful renewals
        self.start_errors = self.reconciler.start_errors  # camera -> why its last start failed
        self.last_probe: QuorumProbe | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by the DCS's leader watch (and by stop) to end a pause early
        self.tick_errors = 0  # ticks that raised an unexpected exception (logged; the loop goes on)

    @property
    def leader(self) -> Leader | None:
        """The leader key as this node holds it (None: not answering "leader")."""
        return self.leadership.leader

    @property
    def mode(self) -> str:
        """normal, failsafe, unreachable or fenced (starting before the first tick)."""
        return self.applier.mode

    @property
    def last(self) -> Decision | None:
        return self.applier.last

    @property
    def health_source(self) -> Callable[[], HealthReport] | None:
        return self.me.source

    @health_source.setter
    def health_source(self, source: Callable[[], HealthReport] | None) -> None:
        self.me.source = source

    @property
    def healthy(self) -> bool:
        return self.me.healthy

    @property
    def health(self) -> HealthReport:
        return self.me.health

    @property
    def session(self) -> int:
        return self.lease.session

    @property
    def last_renewal(self) -> float:
        return self.lease.last_renewal

    @property
    def last_cluster(self) -> Cluster | None:
        return self.lease.last_cluster

    # -- one tick --------------------------------------------------------------------------------------------------

    def run_once(self) -> Decision:
        self.me.read()
        cluster, error = self.lease.refresh(self._member, self._lease_lost)
        probe = None
        if cluster is None:
            probe = self.dcs.probe_quorum()
            if probe.quorum_impossible:
                self.lease.renewed(self.clock.monotonic())
        decision = decide(self._snapshot(cluster, error, probe))
        if decision.action is Action.ACQUIRE:
            decision, cluster = self._acquire(decision, cluster)
        self.applier.apply(decision, cluster)
        return decision

    def _lease_lost(self) -> None:
        stopped = self.reconciler.stop_all()
        log.warning(
            "%s: session lease had expired: leadership and member key lost, stopped %s",
            self.name,
            ", ".join(stopped) or "no camera",
        )
        self.leadership.leader = None

    def _member(self) -> Member:
        return self.me.member(self.runner.running(), self.mode)

    def _snapshot(self, cluster: Cluster | None, error: str, probe: QuorumProbe | None) -> Snapshot:
        self.last_probe = probe
        return Snapshot(
            me=self.name,
            cameras=self.cameras,
            running=frozenset(self.runner.running()),
            cluster=cluster,
            session=self.session,
            healthy=self.healthy,
            since_renewal=self.clock.monotonic() - self.last_renewal,
            ttl=self.ttl,
            dcs_error=error,
            quorum=probe,
        )

    def _acquire(self, decision: Decision, before: Cluster | None) -> tuple[Decision, Cluster | None]:
        """Try to take the leader key; decide again on a fresh read, which ``run_once`` then applies (the first
        assignment is written in the same tick, so the followers need not wait a loop period for it)."""
        self.applier.log(decision)
        try:
            if self.leadership.acquire() is None:
                return Decision(Action.FOLLOW, "leader key taken by another node first: following it"), before
            cluster = self.dcs.get_cluster()
        except DCSError as exc:
            return Decision(Action.WAIT, f"acquiring leadership failed: {exc}"), before
        self.lease.last_cluster = cluster
        return decide(self._snapshot(cluster, "", None)), cluster

    # -- running ---------------------------------------------------------------------------------------------------

    def run(self, max_ticks: int | None = None) -> None:
        """Tick every ``loop_wait`` seconds until ``stop()`` (or ``max_ticks``). Never raises on DCS failures."""
        if self.own_fence is not None:
            self.own_fence.start()
        ticks = 0
        while not self._stop.is_set() and (max_ticks is None or ticks < max_ticks):
            started = self.clock.monotonic()
            self._wake.clear()
            try:
                self.run_once()
            except Exception:  # never let the HA thread die: the fence stops the cameras if ticks keep failing
                self.tick_errors += 1
                log.exception("%s: tick failed (%d so far); trying again next tick", self.name, self.tick_errors)
            ticks += 1
            self._pause(max(0.0, self.loop_wait - (self.clock.monotonic() - started)))

    def _pause(self, seconds: float) -> None:
        """Wait for the next tick. On the real clock with the store watch armed (``watch_changes``), the loop wakes as
        soon as something it acts on changed (a dead leader's lease expired: take over now, not up to a loop period
        later; a peer turned unhealthy; a moved camera stopped), or when :meth:`wake` is called (this node's own
        health verdict changed)."""
        if isinstance(self.clock, SystemClock) and self.dcs.watch_changes(self._wake.set, self.name):
            self._wake.wait(seconds)
        else:
            self.clock.sleep(seconds)

    def wake(self) -> None:
        """Tick now rather than at the end of the pause (this node's health verdict changed: publish it at once)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def shutdown(self, release: bool = True) -> None:
        """Stop the cameras, then (if leading) release leadership at once so the peer takes over without the TTL."""
        self.stop()
        self.reconciler.stop_all()
        if self.own_fence is not None:
            self.own_fence.close()
        self.leadership.give_up(release)

    # -- operator actions ------------------------------------------------------------------------------------------

    def switchover(self, to: str | None = None) -> None:
        """Hand leadership over: as leader, delete the leader key now; otherwise ask the leader to."""
        if to is not None and to == self.name:
            raise DCSError(f"{self.name} cannot switch over to itself")
        if not self.leadership.hand_over(to):
            self.dcs.request_switchover(to, leader=self._cluster_leader())

    def pause(self) -> None:
        self.dcs.set_paused(True)

    def resume(self) -> None:
        self.dcs.set_paused(False)

    def status(self) -> dict[str, Any]:
        """This node's own view: mode (normal, failsafe, unreachable, fenced), leader, token, cameras, last reason."""
        leader = self.leader
        return {
            "node": self.name,
            "mode": self.mode,
            "leader": leader.name if leader else (self._cluster_leader()),
            "token": leader.token if leader else None,
            "session": self.session,
            "running": sorted(self.runner.running()),
            "reason": self.last.reason if self.last else "",
            "quorum": self.last_probe.describe() if self.last_probe else "",
            "healthy": self.healthy,
            "health_reasons": list(self.health.reasons),
            "failing": list(self.health.failing),
            "timing": {"renew_rtt": self.renew_rtt.summary(), "renew_gap": self.renew_gap.summary()},
        }

    def _cluster_leader(self) -> str | None:
        c = self.last_cluster
        return c.leader.name if c is not None and c.leader is not None else None
