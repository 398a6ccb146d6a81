"""Health reaching the decision core: an unhealthy member's cameras move (stopped there first) and come back,
balanced, when it recovers; a camera failing at its source on one member moves alone.

Plans are asserted exactly (pure ``plan_assignment``); the loop-level tests run two HA loops over the in-memory DCS
on the fake clock of ``tests/unit/test_loop.py``, with a health verdict the test sets.
"""

from __future__ import annotations

from failover.dcs import Assignment, Member
from failover.decide import plan_assignment
from failover.loop import HealthReport
from tests.unit.test_loop import World, started_pair

CAMS = {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0}


def m(
    name: str, session: int, running: tuple[str, ...] = (), healthy: bool = True, failing: tuple[str, ...] = ()
) -> Member:
    return Member(name, healthy=healthy, capacity=3, running=running, session=session, failing=failing)


SPLIT = Assignment(
    {"cam-1": "ws-a", "cam-2": "ws-a", "cam-3": "ws-b"},
    {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0},
    token=7,
    sessions={"ws-a": 1, "ws-b": 2},
)


def test_an_unhealthy_member_hands_over_and_gets_its_camera_back_when_healthy() -> None:
    # 1. ws-b unhealthy: cam-3 is unassigned, waiting for ws-b to stop it, and remembered as displaced from ws-b.
    members = {"ws-a": m("ws-a", 1, ("cam-1", "cam-2")), "ws-b": m("ws-b", 2, ("cam-3",), healthy=False)}
    p1 = plan_assignment(CAMS, members, SPLIT, 7)
    assert p1.notes == ["moving cam-3 from ws-b: member unhealthy, waiting for ws-b to stop it"]
    assert p1.assignment.cameras == {"cam-1": "ws-a", "cam-2": "ws-a", "cam-3": None}
    assert (p1.assignment.moving, p1.assignment.displaced) == ({"cam-3": "ws-b"}, {"cam-3": "ws-b"})
    # 2. ws-b stopped it: ws-a takes it.
    members["ws-b"] = m("ws-b", 2, (), healthy=False)
    p2 = plan_assignment(CAMS, members, p1.assignment, 7)
    assert p2.notes == ["moved cam-3 to ws-a: ws-b stopped it"]
    assert p2.assignment.cameras == {"cam-1": "ws-a", "cam-2": "ws-a", "cam-3": "ws-a"}
    assert (p2.assignment.moving, p2.assignment.displaced) == ({}, {"cam-3": "ws-b"})
    # 3. Still unhealthy: nothing changes.
    members["ws-a"] = m("ws-a", 1, ("cam-1", "cam-2", "cam-3"))
    p3 = plan_assignment(CAMS, members, p2.assignment, 7)
    assert (p3.notes, p3.assignment) == ([], p2.assignment)
    # 4. ws-b healthy again: cam-3 (and only cam-3) goes back, ws-a stopping it first.
    members["ws-b"] = m("ws-b", 2)
    p4 = plan_assignment(CAMS, members, p3.assignment, 7)
    assert p4.notes == ["moving cam-3 back to ws-b: ws-b is healthy again, waiting for ws-a to stop it"]
    assert p4.assignment.cameras == {"cam-1": "ws-a", "cam-2": "ws-a", "cam-3": None}
    assert p4.assignment.moving == {"cam-3": "ws-a"}
    members["ws-a"] = m("ws-a", 1, ("cam-1", "cam-2"))
    p5 = plan_assignment(CAMS, members, p4.assignment, 7)
    assert p5.notes == ["moved cam-3 to ws-b: ws-a stopped it"]
    assert p5.assignment.cameras == SPLIT.cameras
    assert (p5.assignment.moving, p5.assignment.displaced) == ({}, {})


def test_a_displaced_camera_stays_when_going_back_would_not_even_the_spread() -> None:
    # ws-b was unhealthy and cam-3 went to ws-a, but meanwhile ws-b runs two others (ws-a lost them): no move back.
    prev = Assignment(
        {"cam-1": "ws-b", "cam-2": "ws-b", "cam-3": "ws-a"},
        dict.fromkeys(CAMS, 10.0),
        token=7,
        sessions={"ws-a": 1, "ws-b": 2},
        displaced={"cam-3": "ws-b"},
    )
    members = {"ws-a": m("ws-a", 1, ("cam-3",)), "ws-b": m("ws-b", 2, ("cam-1", "cam-2"))}
    plan = plan_assignment(CAMS, members, prev, 7)
    assert plan.notes == []
    assert plan.assignment.cameras == prev.cameras
    assert plan.assignment.displaced == {"cam-3": "ws-b"}


def test_a_displaced_camera_is_forgotten_when_its_home_member_is_gone() -> None:
    prev = Assignment(
        {"cam-1": "ws-a", "cam-2": "ws-a", "cam-3": "ws-a"},
        dict.fromkeys(CAMS, 10.0),
        token=7,
        sessions={"ws-a": 1},
        displaced={"cam-3": "ws-b"},
    )
    plan = plan_assignment(CAMS, {"ws-a": m("ws-a", 1, tuple(CAMS))}, prev, 7)
    assert plan.assignment.displaced == {}


def test_a_camera_failing_at_its_source_on_one_member_moves_alone() -> None:
    members = {"ws-a": m("ws-a", 1, ("cam-1", "cam-2"), failing=("cam-1",)), "ws-b": m("ws-b", 2, ("cam-3",))}
    p1 = plan_assignment(CAMS, members, SPLIT, 7)
    assert p1.notes == ["moving cam-1 from ws-a: its source fails from ws-a, waiting for ws-a to stop it"]
    assert p1.assignment.cameras == {"cam-1": None, "cam-2": "ws-a", "cam-3": "ws-b"}
    assert p1.assignment.displaced == {}
    members["ws-a"] = m("ws-a", 1, ("cam-2",), failing=("cam-1",))
    p2 = plan_assignment(CAMS, members, p1.assignment, 7)
    # ws-a runs fewer cameras now, but cam-1 fails from it: ws-b takes it.
    assert p2.notes == ["moved cam-1 to ws-b: ws-a stopped it"]
    assert p2.assignment.cameras == {"cam-1": "ws-b", "cam-2": "ws-a", "cam-3": "ws-b"}
    # cam-1 still remembered as failing on ws-a: it does not go back, even though ws-b runs two.
    members["ws-b"] = m("ws-b", 2, ("cam-1", "cam-3"))
    p3 = plan_assignment(CAMS, members, p2.assignment, 7)
    assert (p3.notes, p3.assignment) == ([], p2.assignment)


def test_a_camera_failing_from_both_members_stays_where_it_is() -> None:
    members = {
        "ws-a": m("ws-a", 1, ("cam-1", "cam-2"), failing=("cam-1",)),
        "ws-b": m("ws-b", 2, ("cam-3",), failing=("cam-1",)),
    }
    plan = plan_assignment(CAMS, members, SPLIT, 7)
    assert (plan.notes, plan.assignment) == ([], SPLIT)


def test_a_camera_failing_on_an_unhealthy_peer_does_not_move_to_it() -> None:
    members = {
        "ws-a": m("ws-a", 1, ("cam-1", "cam-2"), failing=("cam-1",)),
        "ws-b": m("ws-b", 2, ("cam-3",), healthy=False),
    }
    plan = plan_assignment(CAMS, members, SPLIT, 7)
    assert plan.notes == ["moving cam-3 from ws-b: member unhealthy, waiting for ws-b to stop it"]
    assert plan.assignment.cameras["cam-1"] == "ws-a"


def _health(w: World, reports: dict[str, HealthReport]) -> None:
    for name, loop in w.loops.items():
        loop.health_source = lambda name=name: reports[name]  # type: ignore[misc]


def test_loops_an_unhealthy_follower_stops_its_camera_before_the_leader_starts_it_and_gets_it_back() -> None:
    w = started_pair()  # ws-a leads (token 4) with cam-1 and cam-3; ws-b runs cam-2
    reports = {"ws-a": HealthReport(), "ws-b": HealthReport()}
    _health(w, reports)
    t0 = w.clock.now
    reports["ws-b"] = HealthReport(False, ("inference: no answer to a probe frame (deadline 2s)",))
    leader = [w.tick("ws-b", "ws-a")["ws-a"].reason for _ in range(4)]
    assert leader == [
        "moving cam-2 from ws-b: member unhealthy, waiting for ws-b to stop it",
        "moving cam-2 from ws-b: waiting for ws-b to stop it",
        "moved cam-2 to ws-a: ws-b stopped it",
        "leader with token 4: no change (cam-1, cam-2, cam-3 on ws-a)",
    ]
    assert w.running() == {"ws-a": {"cam-1", "cam-2", "cam-3"}, "ws-b": set()}
    assert w.since(t0) == [(t0 + 0.5, "ws-b", "stop", "cam-2", 0), (t0 + 1.0, "ws-a", "start", "cam-2", 4)]
    member = w.dcs["ws-a"].get_cluster().members["ws-b"]
    assert (member.healthy, member.reasons) == (False, ("inference: no answer to a probe frame (deadline 2s)",))
    # Recovered: cam-2 goes back to ws-b, stopped on ws-a first.
    t1 = w.clock.now
    reports["ws-b"] = HealthReport()
    leader = [w.tick("ws-b", "ws-a")["ws-a"].reason for _ in range(3)]
    assert leader == [
        "moving cam-2 back to ws-b: ws-b is healthy again, waiting for ws-a to stop it",
        "moved cam-2 to ws-b: ws-a stopped it",
        "leader with token 4: no change (cam-1, cam-3 on ws-a; cam-2 on ws-b)",
    ]
    assert w.running() == {"ws-a": {"cam-1", "cam-3"}, "ws-b": {"cam-2"}}
    assert w.since(t1) == [(t1, "ws-a", "stop", "cam-2", 0), (t1 + 1.0, "ws-b", "start", "cam-2", 4)]
    assert w.loops["ws-b"].status()["healthy"] is True


def test_loops_an_unhealthy_leader_hands_its_cameras_over_and_gets_back_a_balanced_share() -> None:
    w = started_pair()
    reports = {"ws-a": HealthReport(), "ws-b": HealthReport()}
    _health(w, reports)
    t0 = w.clock.now
    reports["ws-a"] = HealthReport(False, ("data dir not writable: OSError: Read-only file system",))
    leader = [w.tick("ws-a", "ws-b")["ws-a"].reason for _ in range(3)]
    assert leader == [
        "moving cam-1 from ws-a: member unhealthy, waiting for ws-a to stop it; "
        "moving cam-3 from ws-a: member unhealthy, waiting for ws-a to stop it",
        "moved cam-1 to ws-b: ws-a stopped it; moved cam-3 to ws-b: ws-a stopped it",
        "leader with token 4: no change (cam-1, cam-2, cam-3 on ws-b)",
    ]
    assert w.running() == {"ws-a": set(), "ws-b": {"cam-1", "cam-2", "cam-3"}}
    assert w.since(t0) == [
        (t0, "ws-a", "stop", "cam-1", 0),
        (t0, "ws-a", "stop", "cam-3", 0),
        (t0 + 0.5, "ws-b", "start", "cam-1", 4),
        (t0 + 0.5, "ws-b", "start", "cam-3", 4),
    ]
    assert w.leader() == ("ws-a", 4)  # it still leads: leading needs etcd, not inference
    t1 = w.clock.now
    reports["ws-a"] = HealthReport()
    for _ in range(4):
        w.tick("ws-a", "ws-b")
    # Balanced, not restored: one camera back (1 and 2), the first displaced one.
    assert w.running() == {"ws-a": {"cam-1"}, "ws-b": {"cam-2", "cam-3"}}
    assert w.since(t1) == [(t1, "ws-b", "stop", "cam-1", 0), (t1 + 1.0, "ws-a", "start", "cam-1", 4)]


def test_loops_a_health_source_that_raises_keeps_the_last_verdict() -> None:
    w = started_pair()

    def broken() -> HealthReport:
        raise RuntimeError("probe thread gone")

    w.loops["ws-b"].health_source = broken
    d = w.tick("ws-a", "ws-b")
    assert d["ws-b"].reason == "following ws-a: running cam-2"
    assert w.loops["ws-b"].healthy is True


def test_loops_malformed_member_and_assignment_keys_are_ignored_not_fatal() -> None:
    from failover.memory_dcs import _KV

    w = started_pair()
    store = w.store
    store.keys["/edgepair/s1/members/ws-x"] = _KV('{"healthy": true}', 90, 90)  # no name: KeyError when parsed
    d = w.tick("ws-a", "ws-b")
    assert d["ws-a"].reason == "leader with token 4: no change (cam-1, cam-3 on ws-a; cam-2 on ws-b)"
    assert w.dcs["ws-a"].malformed_keys == 1
    good = store.keys["/edgepair/s1/assignment"]
    store.keys["/edgepair/s1/assignment"] = _KV('{"token": "x"}', good.create_revision, good.mod_revision + 1)
    d = w.tick("ws-b", "ws-a")
    # The follower reads no assignment and keeps what it runs; the leader keeps every camera where it runs.
    assert d["ws-b"].reason == "following ws-a: waiting for its first assignment, keeping cam-2"
    assert d["ws-a"].reason == (
        "keeping cam-1 on ws-a: it runs it and no assignment names it; "
        "keeping cam-2 on ws-b: it runs it and no assignment names it; "
        "keeping cam-3 on ws-a: it runs it and no assignment names it"
    )
    assert w.running() == {"ws-a": {"cam-1", "cam-3"}, "ws-b": {"cam-2"}}
    assert (w.loops["ws-a"].tick_errors, w.loops["ws-b"].tick_errors) == (0, 0)


def test_a_lost_assignment_keeps_each_camera_where_it_runs_instead_of_respreading() -> None:
    # Spread afresh, cam-1 would go to ws-a (least loaded, then name) while ws-b still runs it: a double run.
    members = {"ws-a": m("ws-a", 1, ("cam-2",)), "ws-b": m("ws-b", 2, ("cam-1",))}
    plan = plan_assignment({"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0}, members, None, 9)
    assert plan.notes == [
        "keeping cam-1 on ws-b: it runs it and no assignment names it",
        "keeping cam-2 on ws-a: it runs it and no assignment names it",
        "assigning cam-3 to ws-a",
    ]
    assert plan.assignment.cameras == {"cam-1": "ws-b", "cam-2": "ws-a", "cam-3": "ws-a"}
