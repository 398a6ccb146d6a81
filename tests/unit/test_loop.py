"""The HA loop over the in-memory DCS with a fake clock: two nodes ticking in turn, no etcd, no sleeping.

Each test asserts the decision reasons (what the loop logs), the order of camera starts and stops on the fake
clock, and the tokens the assignment was written under.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from cluster.errors import DCSError
from failover.dcs import Assignment, ChangeFilter, Member, QuorumProbe
from failover.decide import Action, Decision
from failover.loop import HALoop, SystemClock
from failover.memory_dcs import FakeClock, MemoryDCS, MemoryStore

TTL = 2.0
WAIT = 0.5  # the loop period (binary-exact, so the fake clock adds up exactly)
FENCE_STEP = WAIT / 4  # how often the fence timers are checked between ticks
CAMS = {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0}


@dataclass
class Runner:
    """Cameras that only record ``(time, node, event, camera, token)`` on the fake clock."""

    node: str
    clock: FakeClock
    log: list[tuple[float, str, str, str, int]]
    cams: dict[str, int] = field(default_factory=dict)

    def start_camera(self, camera_id: str, fps: float, token: int) -> None:
        if camera_id not in self.cams:
            self.log.append((self.clock.now, self.node, "start", camera_id, token))
        self.cams[camera_id] = token

    def stop_camera(self, camera_id: str) -> None:
        if self.cams.pop(camera_id, None) is not None:
            self.log.append((self.clock.now, self.node, "stop", camera_id, 0))

    def running(self) -> set[str]:
        return set(self.cams)


class RecordingDCS(MemoryDCS):
    """Records every assignment write: (token, accepted)."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store, "s1", TTL)
        self.writes: list[tuple[int, bool]] = []

    def write_assignment(self, assignment: Assignment) -> bool:
        ok = super().write_assignment(assignment)
        self.writes.append((assignment.token, ok))
        return ok


class World:
    """Two nodes over one store; ``tick`` runs one loop turn of each given node, then moves the clock on."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(self.clock)
        self.events: list[tuple[float, str, str, str, int]] = []
        self.dcs: dict[str, RecordingDCS] = {}
        self.loops: dict[str, HALoop] = {}
        self.runners: dict[str, Runner] = {}
        for name in ("ws-a", "ws-b"):
            self.dcs[name] = RecordingDCS(self.store)
            self.runners[name] = Runner(name, self.clock, self.events)
            self.loops[name] = HALoop(
                self.dcs[name], name, CAMS, 3, self.runners[name], clock=self.clock, ttl=TTL, loop_wait=WAIT
            )

    def join(self, name: str) -> None:
        """What a node's first tick does before deciding: open its session and write its member key."""
        self.dcs[name].renew()
        self.dcs[name].touch_member(Member(name, capacity=3))

    def tick(self, *names: str, fence: bool = True) -> dict[str, Decision]:
        """One turn of each node's loop in order, then the clock moves on by WAIT, the fence timers checked as
        their threads do (every FENCE_STEP)."""
        out = {n: self.loops[n].run_once() for n in names}
        for _ in range(round(WAIT / FENCE_STEP)):
            self.clock.advance(FENCE_STEP)
            if fence:
                self.check_fences()
        return out

    def check_fences(self) -> None:
        for loop in self.loops.values():
            assert loop.own_fence is not None
            loop.own_fence.check()

    def running(self) -> dict[str, set[str]]:
        return {n: r.running() for n, r in self.runners.items()}

    def leader(self) -> tuple[str, int] | None:
        kv = self.store.keys.get("/edgepair/s1/leader")
        return (kv.value, kv.create_revision) if kv else None

    def since(self, t: float) -> list[tuple[float, str, str, str, int]]:
        return [e for e in self.events if e[0] >= t]


def started_pair() -> World:
    """ws-a leads with token 4 and runs cam-1 and cam-3; ws-b follows and runs cam-2."""
    w = World()
    w.join("ws-b")
    first = w.tick("ws-a", "ws-b")
    assert first["ws-a"].reason == "assigning cam-1 to ws-a; assigning cam-2 to ws-b; assigning cam-3 to ws-a"
    assert first["ws-b"].reason == "following ws-a: running cam-2"
    assert w.running() == {"ws-a": {"cam-1", "cam-3"}, "ws-b": {"cam-2"}}
    assert w.leader() == ("ws-a", 4)
    return w


def test_acquire_alone_takes_every_camera() -> None:
    w = World()
    d = w.tick("ws-a")["ws-a"]
    assert (d.action, d.token) == (Action.LEAD, 3)
    assert d.reason == "assigning cam-1 to ws-a; assigning cam-2 to ws-a; assigning cam-3 to ws-a"
    assert w.loops["ws-a"].last_renewal == 1000.0
    assert w.dcs["ws-a"].writes == [(3, True)]
    assert w.events == [(1000.0, "ws-a", "start", c, 3) for c in ("cam-1", "cam-2", "cam-3")]
    assert w.loops["ws-a"].status()["mode"] == "normal"


def test_renewals_keep_leadership_and_cameras() -> None:
    w = started_pair()
    reasons = set()
    for _ in range(25):  # 12.5 s: six TTLs and more
        d = w.tick("ws-a", "ws-b")
        reasons.add((d["ws-a"].reason, d["ws-b"].reason))
    assert reasons == {
        ("leader with token 4: no change (cam-1, cam-3 on ws-a; cam-2 on ws-b)", "following ws-a: running cam-2")
    }
    assert w.leader() == ("ws-a", 4)
    assert w.dcs["ws-a"].writes == [(4, True)]
    assert len(w.events) == 3 and all(e[2] == "start" for e in w.events)


def test_cut_leader_fences_before_the_follower_takes_over_and_rejoins_as_follower() -> None:
    w = started_pair()
    cut_at = w.clock.now
    w.dcs["ws-a"].cut = True
    reasons_a: list[str] = []
    for _ in range(8):  # 4 s: two TTLs
        d = w.tick("ws-a", "ws-b")
        reasons_a.append(d["ws-a"].reason)
    probe = "(etcd members: 3 not answering of 3)"
    assert reasons_a[:4] == [
        f"etcd unreachable: keeping cam-1, cam-3 until the fence at 1.6s without renewal (now {s:.1f}s) {probe}"
        for s in (0.5, 1.0, 1.5)
    ] + [f"etcd unreachable for 2.0s and quorum loss not confirmed: stopping no camera {probe}"]
    # ws-a's last renewal was one tick before the cut. Its fence timer stopped its cameras at the first check past
    # 1.6 s (the loop found nothing left to stop); ws-b took over at its first tick once ws-a's lease had expired.
    renewed = cut_at - WAIT
    assert w.since(cut_at) == [
        (renewed + 1.625, "ws-a", "stop", "cam-1", 0),
        (renewed + 1.625, "ws-a", "stop", "cam-3", 0),
        (renewed + 2.0, "ws-b", "start", "cam-1", 13),
        (renewed + 2.0, "ws-b", "start", "cam-3", 13),
    ]
    assert w.leader() == ("ws-b", 13)
    w.dcs["ws-a"].cut = False
    healed = w.tick("ws-a", "ws-b")
    assert healed["ws-a"].reason == "following ws-b: running no camera"
    assert healed["ws-b"].reason == "leader with token 13: no change (cam-1, cam-2, cam-3 on ws-b)"
    for _ in range(5):
        w.tick("ws-a", "ws-b")
    assert w.dcs["ws-a"].writes == [(4, True)]  # nothing written under the old token after the cut
    assert w.dcs["ws-b"].writes == [(13, True)]
    assert w.running() == {"ws-a": set(), "ws-b": {"cam-1", "cam-2", "cam-3"}}
    assert w.loops["ws-a"].session != 2 and w.loops["ws-a"].status()["leader"] == "ws-b"


def test_loop_itself_stops_the_cameras_when_the_fence_timer_is_late() -> None:
    w = started_pair()
    cut_at = w.clock.now
    w.dcs["ws-a"].cut = True
    decisions = [w.tick("ws-a", fence=False)["ws-a"] for _ in range(4)]
    assert [d.action for d in decisions] == [Action.WAIT, Action.WAIT, Action.WAIT, Action.FENCE]
    assert decisions[-1].reason == (
        "etcd unreachable for 2.0s and quorum loss not confirmed: stopping cam-1, cam-3 "
        "(etcd members: 3 not answering of 3)"
    )
    assert w.since(cut_at) == [(cut_at + 1.5, "ws-a", "stop", "cam-1", 0), (cut_at + 1.5, "ws-a", "stop", "cam-3", 0)]
    assert w.loops["ws-a"].status()["mode"] == "fenced"


def test_reassignment_when_a_frozen_follower_lease_expires() -> None:
    w = started_pair()
    reasons = [w.tick("ws-a")["ws-a"].reason for _ in range(5)]  # ws-b stopped ticking (killed): its lease expires
    assert reasons == ["leader with token 4: no change (cam-1, cam-3 on ws-a; cam-2 on ws-b)"] * 3 + [
        "reassigning cam-2 from ws-b: member lease expired to ws-a",
        "leader with token 4: no change (cam-1, cam-2, cam-3 on ws-a)",
    ]
    # ws-b is stopped, not dead: its fence timer stops cam-2 before its lease ends and ws-a starts it.
    assert w.since(1000.5) == [(1001.625, "ws-b", "stop", "cam-2", 0), (1002.0, "ws-a", "start", "cam-2", 4)]
    assert w.dcs["ws-a"].writes == [(4, True), (4, True)]


def test_quorum_lost_keeps_cameras_makes_no_assignment_and_regains() -> None:
    w = started_pair()
    lost_at = w.clock.now
    revision = w.store.revision
    w.store.lose_quorum(QuorumProbe(total=3, no_leader=("witness",), down=("ws-b",), unknown=("ws-a",)))
    decisions = [w.tick("ws-a", "ws-b") for _ in range(15)]  # 6 s: three TTLs
    assert {(d["ws-a"].action, d["ws-a"].reason) for d in decisions} == {
        (
            Action.FAILSAFE,
            "no quorum: keeping cam-1, cam-3, making no new assignment "
            "(etcd members: 1 without raft leader, 1 down, 1 not answering of 3)",
        )
    }
    assert {d["ws-b"].reason for d in decisions} == {
        "no quorum: keeping cam-2, making no new assignment "
        "(etcd members: 1 without raft leader, 1 down, 1 not answering of 3)"
    }
    assert all(d[n].assignment is None and d[n].run is None for d in decisions for n in d)
    assert w.loops["ws-a"].status()["mode"] == "failsafe"
    assert w.since(lost_at) == [] and w.store.revision == revision
    w.store.regain_quorum()
    back = w.tick("ws-a", "ws-b")
    assert back["ws-a"].reason == "leader with token 4: no change (cam-1, cam-3 on ws-a; cam-2 on ws-b)"
    assert back["ws-b"].reason == "following ws-a: running cam-2"
    assert w.since(lost_at) == [] and w.leader() == ("ws-a", 4)


def test_switchover_to_a_named_node_moves_no_camera() -> None:
    w = started_pair()
    at = w.clock.now
    w.loops["ws-a"].switchover("ws-b")
    assert w.leader() is None
    d = w.tick("ws-a", "ws-b")
    assert d["ws-a"].reason == "no leader: leaving leadership to switchover candidate ws-b"
    assert d["ws-b"].reason == "leader with token 11: writing the assignment (cam-1, cam-3 on ws-a; cam-2 on ws-b)"
    d = w.tick("ws-a", "ws-b")
    assert d["ws-a"].reason == "following ws-b: running cam-1, cam-3"
    assert d["ws-b"].reason == "leader with token 11: no change (cam-1, cam-3 on ws-a; cam-2 on ws-b)"
    assert w.leader() == ("ws-b", 11) and w.store.keys.get("/edgepair/s1/switchover") is None
    assert w.since(at) == []  # nobody stopped or started a camera


def test_switchover_to_any_node_is_not_bounced_back() -> None:
    w = started_pair()
    w.loops["ws-a"].switchover()
    for _ in range(3):
        d = w.tick("ws-a", "ws-b")
    assert d["ws-a"].reason == "following ws-b: running cam-1, cam-3"
    assert d["ws-b"].reason == "leader with token 11: no change (cam-1, cam-3 on ws-a; cam-2 on ws-b)"
    assert w.leader() == ("ws-b", 11)


def test_switchover_asked_by_a_follower() -> None:
    w = started_pair()
    w.loops["ws-b"].switchover()  # ws-b is no leader: it asks ws-a to hand over
    d = w.tick("ws-a", "ws-b")
    assert (d["ws-a"].action, d["ws-a"].reason) == (
        Action.RELEASE,
        "switchover requested: releasing leadership to ws-b",
    )
    assert d["ws-b"].reason == "leader with token 11: writing the assignment (cam-1, cam-3 on ws-a; cam-2 on ws-b)"
    assert w.leader() == ("ws-b", 11)


def test_leader_that_handed_over_does_not_take_the_key_back_before_the_candidate() -> None:
    w = started_pair()
    w.loops["ws-b"].switchover()
    first = w.tick("ws-a")["ws-a"]
    assert (first.action, first.reason) == (Action.RELEASE, "switchover requested: releasing leadership to ws-b")
    again = w.tick("ws-a")["ws-a"]  # ws-a ticks again before ws-b does
    assert (again.action, again.reason) == (
        Action.FOLLOW,
        "no leader: this node switched over, leaving leadership to ws-b",
    )
    d = w.tick("ws-a", "ws-b")
    assert d["ws-b"].reason == "leader with token 13: writing the assignment (cam-1, cam-3 on ws-a; cam-2 on ws-b)"
    assert w.leader() == ("ws-b", 13) and w.store.keys.get("/edgepair/s1/switchover") is None
    assert w.running() == {"ws-a": {"cam-1", "cam-3"}, "ws-b": {"cam-2"}}


def test_pause_freezes_reassignment_until_resume() -> None:
    w = started_pair()
    w.loops["ws-a"].pause()
    reasons = [w.tick("ws-a")["ws-a"].reason for _ in range(8)]  # ws-b gone for 3.2 s
    assert set(reasons) == {"leader, paused: moving no camera, keeping cam-1, cam-3"}
    assert w.running()["ws-a"] == {"cam-1", "cam-3"}
    w.loops["ws-a"].resume()
    assert w.tick("ws-a")["ws-a"].reason == "reassigning cam-2 from ws-b: member lease expired to ws-a"
    assert w.running()["ws-a"] == {"cam-1", "cam-2", "cam-3"}


def test_switchover_to_itself_is_refused() -> None:
    w = started_pair()
    with pytest.raises(DCSError, match="ws-a cannot switch over to itself"):
        w.loops["ws-a"].switchover("ws-a")


class NoSleep(SystemClock):
    def sleep(self, seconds: float) -> None:
        raise AssertionError(f"slept {seconds}s instead of waiting on the leader watch")


class WatchingDCS(MemoryDCS):
    """A store watch that reports a change at once (as if the leader key had just been deleted)."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store, "s1", TTL)
        self.armed = 0

    def watch_changes(self, on_change: Callable[[], None], me: str) -> bool:
        self.armed += 1
        on_change()
        return True


def test_follower_pause_ends_when_the_store_watch_fires() -> None:
    dcs = WatchingDCS(MemoryStore(FakeClock()))
    runner = Runner("ws-b", FakeClock(), [])
    loop = HALoop(dcs, "ws-b", CAMS, 3, runner, clock=NoSleep(), ttl=TTL)
    loop._pause(600.0)  # returns at once: the watch fired (a broken pause would wait 600 s, then fail below)
    assert dcs.armed == 1 and loop._wake.is_set()


def test_leader_pause_sleeps_without_watch() -> None:
    w = started_pair()
    dcs = w.dcs["ws-a"]
    loop = w.loops["ws-a"]
    assert loop.leader is not None and not dcs.watch_changes(lambda: None, "ws-a")
    loop._pause(WAIT)  # the fake clock: moves it on
    assert w.clock.now == 1001.0


class _Exploding(RecordingDCS):
    """A DCS whose reads raise an unexpected exception (a KeyError from a malformed key, a bug) ``n`` times."""

    def __init__(self, store: MemoryStore, n: int) -> None:
        super().__init__(store)
        self.left = n

    def get_cluster(self):  # type: ignore[no-untyped-def]
        if self.left > 0:
            self.left -= 1
            raise KeyError("cameras")
        return super().get_cluster()


def test_an_unexpected_exception_in_a_tick_never_ends_the_loop() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    dcs = _Exploding(store, n=3)
    runner = Runner("ws-a", clock, [])
    loop = HALoop(dcs, "ws-a", CAMS, 3, runner, clock=clock, ttl=TTL, loop_wait=WAIT)
    loop.run(max_ticks=6)  # three ticks raise, three work: run() returns only after all six
    assert loop.tick_errors == 3
    assert dcs.left == 0
    assert loop.leader is not None and loop.leader.name == "ws-a"
    assert runner.running() == set(CAMS)


@pytest.mark.parametrize("how", ["switchover", "asked", "shutdown"])
def test_a_leader_stops_saying_leader_before_its_key_is_deleted(how: str) -> None:
    """/health's role reads ``loop.leader`` at request time: it must already be None when the key goes, or a request
    landing between the delete and the peer's acquire sees two leaders (the rolling upgrade's prober saw it)."""
    w = started_pair()
    loop, dcs = w.loops["ws-a"], w.dcs["ws-a"]
    seen: list[object] = []
    release = dcs.release_leader

    def recording(leader: object) -> bool:
        seen.append(loop.leader)
        return release(leader)  # type: ignore[arg-type]

    dcs.release_leader = recording  # type: ignore[method-assign]
    if how == "switchover":
        loop.switchover("ws-b")
    elif how == "asked":
        w.loops["ws-b"].switchover()
        w.tick("ws-a")
    else:
        loop.shutdown(release=True)
    assert seen == [None]
    assert w.leader() is None and loop.leader is None


def _member(name: str, wall: float, running: tuple[str, ...] = (), healthy: bool = True) -> bytes:
    return Member(name, healthy, 3, running, wall=wall).to_json().encode()


def test_the_store_watch_wakes_on_what_the_loop_acts_on_and_not_on_clock_ticks() -> None:
    f = ChangeFilter("ws-a")
    assert f.wakes("members/ws-a", _member("ws-a", 1.0)) is False  # our own key never wakes us
    assert f.wakes("members/ws-b", _member("ws-b", 1.0)) is True  # first seen
    assert f.wakes("members/ws-b", _member("ws-b", 1.4)) is False  # only its clock moved (every tick)
    assert f.wakes("members/ws-b", _member("ws-b", 1.8, healthy=False)) is True  # turned unhealthy
    assert f.wakes("members/ws-b", _member("ws-b", 2.2, healthy=False)) is False
    assert f.wakes("members/ws-b", _member("ws-b", 2.6, ("cam-1",), healthy=False)) is True  # cameras changed
    assert f.wakes("members/ws-b", None) is True  # its lease expired: the key is gone
    assert f.wakes("members/ws-b", None) is False
    assert f.wakes("leader", b"ws-b") is True
    assert f.wakes("leader", b"ws-b") is False  # rewritten the same: nothing to do
    assert f.wakes("leader", None) is True  # the leader's lease expired
    assert f.wakes("assignment", b'{"token": 5}') is True
    assert f.wakes("assignment", b'{"token": 5}') is False
    assert f.wakes("members/ws-c", b"not json") is True  # malformed: reported by the next read
    assert f.wakes("members/ws-c", b"not json") is False
