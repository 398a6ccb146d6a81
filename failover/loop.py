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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cluster.errors import DCSError
from failover.dcs import AbstractDCS, Cluster, Leader, Member, QuorumProbe
from failover.decide import Action, Decision, Snapshot, decide
from failover.fence import CameraRunner, Fenced, FencedRunner
from failover.timing import Durations

log = logging.getLogger(__name__)


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class HealthReport:
    """A node's health as its probes measured it (:mod:`cluster.health`), read by the loop at every tick.

    ``healthy`` is the verdict after hysteresis; ``reasons`` say why (one sentence per probe that failed or that is
    reported without counting); ``failing`` names the cameras whose source fails from this node (not its fault)."""

    healthy: bool = True
    reasons: tuple[str, ...] = ()
    failing: tuple[str, ...] = ()


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
        self.healthy = healthy
        self.health_source = health
        self.health = HealthReport(healthy)
        self.wall = wall
        self.own_fence: FencedRunner | None = None
        if isinstance(runner, Fenced):
            self.runner: Fenced = runner
        else:
            self.own_fence = FencedRunner(runner, ttl, node=node_name, monotonic=self.clock.monotonic)
            self.runner = self.own_fence
        self.session = 0
        self.last_renewal = float("-inf")
        self.leader: Leader | None = None
        self.mode = "starting"
        self.last: Decision | None = None
        self.last_cluster: Cluster | None = None
        self.last_probe: QuorumProbe | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by the DCS's leader watch (and by stop) to end a pause early
        self.tick_errors = 0  # ticks that raised an unexpected exception (logged; the loop goes on)
        self.start_errors: dict[str, str] = {}  # camera -> why its last start failed (logged once per reason)
        self.renew_rtt = Durations()  # how long each successful renewal request took
        self.renew_gap = Durations()  # time between the sends of two successive successful renewals (the fence's)
        self.last_renewal_sent = float("-inf")

    # -- one tick --------------------------------------------------------------------------------------------------

    def run_once(self) -> Decision:
        self._read_health()
        cluster, error = self._refresh()
        probe = None
        if cluster is None:
            probe = self.dcs.probe_quorum()
            if probe.quorum_impossible:
                self._renewed(self.clock.monotonic())
        decision = decide(self._snapshot(cluster, error, probe))
        if decision.action is Action.ACQUIRE:
            decision, cluster = self._acquire(decision, cluster)
        self._apply(decision, cluster)
        return decision

    def _read_health(self) -> None:
        if self.health_source is None:
            return
        try:
            report = self.health_source()
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

    def _refresh(self) -> tuple[Cluster | None, str]:
        sent = self.clock.monotonic()
        try:
            alive = self.dcs.renew()
            if not alive and self.session:
                stopped = self._stop_all()
                log.warning(
                    "%s: session lease had expired: leadership and member key lost, stopped %s",
                    self.name,
                    ", ".join(stopped) or "no camera",
                )
                self.leader = None
            self._renewed(sent)
            self._time_renewal(sent)
            self.session = self.dcs.touch_member(self._member())
            cluster = self.dcs.get_cluster()
        except DCSError as exc:
            return None, str(exc)
        self.last_cluster = cluster
        return cluster, ""

    def _time_renewal(self, sent: float) -> None:
        now = self.clock.monotonic()
        self.renew_rtt.add(now - sent)
        if self.last_renewal_sent > float("-inf"):
            self.renew_gap.add(sent - self.last_renewal_sent)
        self.last_renewal_sent = sent

    def _renewed(self, at: float) -> None:
        self.last_renewal = at
        self.runner.renewed(at)

    def _member(self) -> Member:
        mode = self.mode if self.mode in ("normal", "failsafe", "fenced") else "normal"
        return Member(
            self.name,
            self.healthy,
            self.capacity,
            tuple(sorted(self.runner.running())),
            mode=mode,
            reasons=self.health.reasons,
            failing=self.health.failing,
            wall=round(self.wall(), 3),
        )

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
        """Try to take the leader key; decide again on a fresh read, which ``_apply`` then acts on (the first
        assignment is written in the same tick, so the followers need not wait a loop period for it)."""
        self._log(decision)
        try:
            leader = self.dcs.attempt_to_acquire_leader(self.name)
            if leader is None:
                return Decision(Action.FOLLOW, "leader key taken by another node first: following it"), before
            self.leader = leader
            log.info("%s: acquired leadership (token %d)", self.name, leader.token)
            cluster = self.dcs.get_cluster()
        except DCSError as exc:
            return Decision(Action.WAIT, f"acquiring leadership failed: {exc}"), before
        self.last_cluster = cluster
        return decide(self._snapshot(cluster, "", None)), cluster

    # -- applying --------------------------------------------------------------------------------------------------

    def _apply(self, decision: Decision, cluster: Cluster | None) -> None:
        self._log(decision)
        act = decision.action
        self.mode = {Action.FAILSAFE: "failsafe", Action.FENCE: "fenced", Action.WAIT: "unreachable"}.get(act, "normal")
        try:
            if act is Action.RELEASE and cluster is not None and cluster.leader is not None:
                # Stop answering "leader" (live_role) before the key goes: once it is deleted the peer may take it
                # at once, and both nodes must never say leader at the same moment.
                self.leader = None
                if self.dcs.release_leader(cluster.leader):
                    log.info("%s: released leadership (token %d) for the switchover", self.name, cluster.leader.token)
                # The switchover key stays until the new leader clears it: while it names this node as the one
                # that handed over, this node does not take the key straight back at its next tick.
                return
            if act is Action.LEAD and cluster is not None and cluster.leader is not None:
                self.leader = cluster.leader
                sw = cluster.switchover
                if sw is not None:
                    if sw.candidate == self.name or sw.leader not in (None, self.name):
                        log.info("%s: switchover to this node done (token %d)", self.name, cluster.leader.token)
                    else:
                        log.info("%s: switchover asked for but no other healthy member: staying leader", self.name)
                    self.dcs.clear_switchover()
                if decision.assignment is not None:
                    if not self.dcs.write_assignment(decision.assignment):
                        log.warning(
                            "%s: assignment refused: the leader key no longer has token %d; starting nothing",
                            self.name,
                            decision.assignment.token,
                        )
                        self.leader = None
                        self._reconcile(decision.run or {}, decision.token, starts=False)
                        return
                    if cluster.rebalance:
                        self.dcs.set_rebalance(False)
            elif act is Action.FOLLOW:
                self.leader = None
        except DCSError as exc:
            log.warning("%s: applying %s failed: %s; starting nothing this tick", self.name, act, exc)
            if decision.run is not None:
                self._reconcile(decision.run, decision.token, starts=False)
            return
        if act is Action.FENCE:
            self._stop_all()
        elif decision.run is not None:
            self._reconcile(decision.run, decision.token, starts=True)

    def _reconcile(self, run: dict[str, float], token: int, starts: bool) -> None:
        for cam in sorted(self.runner.running() - set(run)):
            log.info("%s: stopping %s", self.name, cam)
            self.runner.stop_camera(cam)
        if not starts:
            return
        running = self.runner.running()
        failed: list[str] = []
        for cam, fps in sorted(run.items()):
            if cam not in running:
                log.info("%s: starting %s at %.2f fps under token %d", self.name, cam, fps, token)
            try:  # one camera that cannot start (not in this node's config, a broken source) leaves the others
                self.runner.start_camera(cam, fps, token)
            except Exception as exc:
                failed.append(cam)
                if self.start_errors.get(cam) != str(exc):
                    log.error("%s: cannot start %s: %s", self.name, cam, exc)
                self.start_errors[cam] = str(exc)
        for cam in list(self.start_errors):
            if cam not in failed:
                del self.start_errors[cam]
        if failed:
            raise RuntimeError(f"{self.name}: cannot start {', '.join(failed)} (the other cameras were started)")

    def _stop_all(self) -> list[str]:
        stopped = sorted(self.runner.running())
        for cam in stopped:
            self.runner.stop_camera(cam)
        return stopped

    def _log(self, decision: Decision) -> None:
        last = self.last
        level = logging.INFO if last is None or (last.action, last.reason) != (decision.action, decision.reason) else 0
        if level:
            log.log(level, "%s: %s", self.name, decision.reason)
        else:
            log.debug("%s: %s", self.name, decision.reason)
        self.last = decision

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
        self._stop_all()
        if self.own_fence is not None:
            self.own_fence.close()
        leader, self.leader = self.leader, None  # no longer "leader" (live_role) before the key goes
        if release and leader is not None:
            try:
                self.dcs.release_leader(leader)
            except DCSError as exc:
                log.warning("%s: releasing leadership on shutdown failed: %s", self.name, exc)

    # -- operator actions ------------------------------------------------------------------------------------------

    def switchover(self, to: str | None = None) -> None:
        """Hand leadership over: as leader, delete the leader key now; otherwise ask the leader to."""
        if to is not None and to == self.name:
            raise DCSError(f"{self.name} cannot switch over to itself")
        if self.leader is not None:
            self.dcs.request_switchover(to, leader=self.name)
            leader, self.leader = self.leader, None  # no longer "leader" (live_role) before the key goes
            if self.dcs.release_leader(leader):
                log.info("%s: released leadership (token %d) for a switchover", self.name, leader.token)
        else:
            current = self._cluster_leader()
            self.dcs.request_switchover(to, leader=current)

    def pause(self) -> None:
        self.dcs.set_paused(True)

    def resume(self) -> None:
        self.dcs.set_paused(False)

    def status(self) -> dict[str, Any]:
        """This node's own view: mode (normal, failsafe, unreachable, fenced), leader, token, cameras, last reason."""
        return {
            "node": self.name,
            "mode": self.mode,
            "leader": self.leader.name if self.leader else (self._cluster_leader()),
            "token": self.leader.token if self.leader else None,
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
