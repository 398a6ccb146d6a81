"""The parts of the HA loop split out of ``HALoop`` (issue 16), each on its own: the runner's reconciliation, the
leader key's writes (over the in-memory DCS), the member key a node publishes and the decision log. The loop as a
whole stays covered by ``test_loop.py``."""

from __future__ import annotations

import logging

import pytest

from failover.apply import Applier
from failover.dcs import Assignment
from failover.decide import Action, Decision
from failover.leadership import Leadership
from failover.memory_dcs import FakeClock, MemoryDCS, MemoryStore
from failover.reconcile import Reconciler
from failover.selfreport import HealthReport, SelfReport


class Runner:
    """Records starts and stops; ``broken`` cameras raise on start."""

    def __init__(self, running: dict[str, int] | None = None, broken: dict[str, str] | None = None) -> None:
        self.cams = dict(running or {})
        self.broken = dict(broken or {})
        self.calls: list[tuple[str, str, int]] = []

    def renewed(self, at: float) -> None:
        pass

    def start_camera(self, camera_id: str, fps: float, token: int) -> None:
        self.calls.append(("start", camera_id, token))
        if camera_id in self.broken:
            raise ValueError(self.broken[camera_id])
        self.cams[camera_id] = token

    def stop_camera(self, camera_id: str) -> None:
        self.calls.append(("stop", camera_id, 0))
        self.cams.pop(camera_id, None)

    def running(self) -> set[str]:
        return set(self.cams)


def test_reconcile_stops_the_others_first_then_starts_every_decided_camera_in_order() -> None:
    runner = Runner({"cam-9": 3, "cam-2": 3})
    Reconciler(runner, "ws-a").reconcile({"cam-2": 10.0, "cam-1": 10.0}, 4, starts=True)
    assert runner.calls == [("stop", "cam-9", 0), ("start", "cam-1", 4), ("start", "cam-2", 4)]


def test_reconcile_without_starts_only_stops() -> None:
    runner = Runner({"cam-9": 3, "cam-2": 3})
    Reconciler(runner, "ws-a").reconcile({"cam-2": 10.0, "cam-1": 10.0}, 4, starts=False)
    assert runner.calls == [("stop", "cam-9", 0)] and runner.running() == {"cam-2"}


def test_one_camera_that_cannot_start_leaves_the_others_and_is_logged_once_per_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Runner(broken={"cam-1": "not in this node's config"})
    r = Reconciler(runner, "ws-a")
    with caplog.at_level(logging.ERROR, logger="failover.loop"):
        for _ in range(2):
            with pytest.raises(RuntimeError, match=r"cannot start cam-1 \(the other cameras were started\)"):
                r.reconcile({"cam-1": 10.0, "cam-2": 10.0}, 4, starts=True)
    assert runner.running() == {"cam-2"} and r.start_errors == {"cam-1": "not in this node's config"}
    assert [m.getMessage() for m in caplog.records] == ["ws-a: cannot start cam-1: not in this node's config"]
    runner.broken.clear()
    r.reconcile({"cam-1": 10.0, "cam-2": 10.0}, 4, starts=True)
    assert r.start_errors == {} and runner.running() == {"cam-1", "cam-2"}


def test_stop_all_returns_what_it_stopped_sorted() -> None:
    runner = Runner({"cam-2": 1, "cam-1": 1})
    assert Reconciler(runner, "ws-a").stop_all() == ["cam-1", "cam-2"] and runner.running() == set()


def dcs() -> MemoryDCS:
    d = MemoryDCS(MemoryStore(FakeClock()), "s1", 2.0)
    d.renew()
    return d


def test_leadership_takes_the_key_once_and_a_second_node_gets_none() -> None:
    store = MemoryStore(FakeClock())
    a, b = MemoryDCS(store, "s1", 2.0), MemoryDCS(store, "s1", 2.0)
    a.renew()
    b.renew()
    la, lb = Leadership(a, "ws-a"), Leadership(b, "ws-b")
    taken = la.acquire()
    assert taken is not None and la.leader == taken
    assert lb.acquire() is None and lb.leader is None


def test_an_assignment_refused_under_an_old_token_leaves_the_node_leading_nothing() -> None:
    d = dcs()
    lead = Leadership(d, "ws-a")
    leader = lead.acquire()
    assert leader is not None
    cluster = d.get_cluster()
    good = Assignment({"cam-1": "ws-a"}, {"cam-1": 10.0}, leader.token)
    assert lead.lead(cluster, leader, good) and lead.leader == leader
    assert d.get_cluster().assignment == good
    stale = Assignment({"cam-1": "ws-a"}, {"cam-1": 5.0}, leader.token - 1)
    assert not lead.lead(cluster, leader, stale) and lead.leader is None
    assert d.get_cluster().assignment == good


def test_a_switchover_drops_leader_before_the_key_goes_and_a_follower_hands_over_nothing() -> None:
    d = dcs()
    lead = Leadership(d, "ws-a")
    assert not lead.hand_over("ws-b")  # not leading: nothing done
    assert lead.acquire() is not None
    assert lead.hand_over("ws-b") and lead.leader is None
    c = d.get_cluster()
    assert (
        c.leader is None
        and c.switchover is not None
        and (c.switchover.candidate, c.switchover.leader)
        == (
            "ws-b",
            "ws-a",
        )
    )


def test_give_up_without_release_keeps_the_key() -> None:
    d = dcs()
    lead = Leadership(d, "ws-a")
    assert lead.acquire() is not None
    lead.give_up(release=False)
    assert lead.leader is None and d.get_cluster().leader is not None
    lead.leader = d.get_cluster().leader
    lead.give_up()
    assert d.get_cluster().leader is None


@pytest.mark.parametrize(
    ("mode", "published"),
    [("normal", "normal"), ("failsafe", "failsafe"), ("fenced", "fenced"), ("starting", "normal"),
     ("unreachable", "normal")],
)  # fmt: skip
def test_the_member_key_publishes_only_the_modes_a_peer_acts_on(mode: str, published: str) -> None:
    me = SelfReport("ws-a", 3, wall=lambda: 1_800_000_000.12345)
    m = me.member({"cam-2", "cam-1"}, mode)
    assert (m.name, m.healthy, m.capacity, m.running, m.mode, m.wall) == (
        "ws-a",
        True,
        3,
        ("cam-1", "cam-2"),
        published,
        1_800_000_000.123,
    )


def test_a_broken_health_source_keeps_the_last_verdict() -> None:
    reports = [HealthReport(False, ("inference: no answer",), ("cam-1",))]

    def source() -> HealthReport:
        if not reports:
            raise OSError("probe gone")
        return reports.pop()

    me = SelfReport("ws-a", 3, source=source)
    me.read()
    assert not me.healthy and me.health.failing == ("cam-1",)
    me.read()
    assert not me.healthy and me.member(set(), "normal").reasons == ("inference: no answer",)


def test_the_applier_logs_a_repeated_reason_at_debug_and_sets_the_mode(caplog: pytest.LogCaptureFixture) -> None:
    runner = Runner({"cam-1": 1})
    applier = Applier("ws-a", Leadership(dcs(), "ws-a"), Reconciler(runner, "ws-a"))
    fence = Decision(Action.FENCE, "fence deadline passed: stopping every camera")
    with caplog.at_level(logging.DEBUG, logger="failover.loop"):
        applier.apply(fence, None)
        applier.apply(fence, None)
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.DEBUG]
    assert applier.mode == "fenced" and applier.last == fence and runner.running() == set()
    applier.apply(Decision(Action.WAIT, "etcd unreachable", run={"cam-1": 10.0}, token=3), None)
    assert applier.mode == "unreachable" and runner.running() == {"cam-1"}


def test_the_applier_leading_under_a_lost_token_stops_only() -> None:
    d = dcs()
    lead = Leadership(d, "ws-a")
    leader = lead.acquire()
    assert leader is not None
    runner = Runner({"cam-9": 1})
    applier = Applier("ws-a", lead, Reconciler(runner, "ws-a"))
    stale = Assignment({"cam-1": "ws-a"}, {"cam-1": 10.0}, leader.token + 5)
    applier.apply(Decision(Action.LEAD, "leading", stale, run={"cam-1": 10.0}, token=leader.token), d.get_cluster())
    assert runner.calls == [("stop", "cam-9", 0)] and lead.leader is None and applier.mode == "normal"
