"""Table-driven tests of the election and assignment core: each case asserts the action, the reason and the plan."""

from __future__ import annotations

import pytest

from failover.dcs import Assignment, Cluster, Leader, Member, QuorumProbe, Switchover
from failover.decide import Action, Snapshot, decide, plan_assignment

CAMS = {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0}


def member(name: str, session: int, capacity: int = 3, running: tuple[str, ...] = (), healthy: bool = True) -> Member:
    return Member(name, healthy=healthy, capacity=capacity, running=running, session=session)


def snap(cluster: Cluster | None, me: str = "ws-a", running: tuple[str, ...] = (), **kw: object) -> Snapshot:
    return Snapshot(
        me=me, cameras=CAMS, running=frozenset(running), cluster=cluster, session=kw.pop("session", 1), **kw
    )  # type: ignore[arg-type]


A, B = member("ws-a", 1), member("ws-b", 2)
SPLIT = Assignment(
    {"cam-1": "ws-a", "cam-2": "ws-a", "cam-3": "ws-b"},
    {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0},
    token=7,
    sessions={"ws-a": 1, "ws-b": 2},
)

CASES = [
    pytest.param(
        snap(Cluster({"ws-a": A}, None, None)),
        Action.ACQUIRE,
        "no leader: trying to acquire leadership",
        id="no-leader",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, None, None), healthy=False),
        Action.FOLLOW,
        "no leader, not acquiring: this node is unhealthy and another is healthy",
        id="unhealthy-does-not-acquire",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A}, None, None), healthy=False),
        Action.ACQUIRE,
        "no leader and no healthy member: acquiring though this node is unhealthy",
        id="lone-unhealthy-acquires",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, Leader("ws-b", 7), SPLIT), running=("cam-1",)),
        Action.FOLLOW,
        "following ws-b: running cam-1, cam-2",
        id="follow",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, Leader("ws-b", 9), SPLIT), running=("cam-1", "cam-2")),
        Action.FOLLOW,
        "following ws-b: waiting for its first assignment, keeping cam-1, cam-2",
        id="stale-token-keeps",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, Leader("ws-b", 7), SPLIT), running=("cam-1",), session=5),
        Action.FOLLOW,
        "following ws-b: the assignment is for an older session of this node, stopping cam-1 until ws-b reassigns",
        id="old-session-stops",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A}, Leader("ws-a", 7), SPLIT)),
        Action.LEAD,
        "reassigning cam-3 from ws-b: member lease expired to ws-a",
        id="peer-lease-expired",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": member("ws-b", 8)}, Leader("ws-a", 7), SPLIT)),
        Action.LEAD,
        "reassigning cam-3 from ws-b: member restarted to ws-b",
        id="peer-restarted",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, Leader("ws-a", 7), SPLIT)),
        Action.LEAD,
        "leader with token 7: no change (cam-1, cam-2 on ws-a; cam-3 on ws-b)",
        id="steady",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, Leader("ws-a", 7), SPLIT, paused=True), running=("cam-1", "cam-2")),
        Action.LEAD,
        "leader, paused: moving no camera, keeping cam-1, cam-2",
        id="paused",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, Leader("ws-a", 7), SPLIT, switchover=Switchover(None, "ws-a"))),
        Action.RELEASE,
        "switchover requested: releasing leadership to ws-b",
        id="switchover",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A}, Leader("ws-a", 7), SPLIT, switchover=Switchover("ws-b", "ws-a"))),
        Action.LEAD,
        "reassigning cam-3 from ws-b: member lease expired to ws-a",
        id="switchover-to-absent-member-ignored",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, Leader("ws-a", 9), SPLIT, switchover=Switchover(None, "ws-b"))),
        Action.LEAD,
        "leader with token 9: writing the assignment (cam-1, cam-2 on ws-a; cam-3 on ws-b)",
        id="switchover-to-any-won-is-done",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, None, SPLIT, switchover=Switchover(None, "ws-a"))),
        Action.FOLLOW,
        "no leader: this node switched over, leaving leadership to ws-b",
        id="switched-over-node-does-not-retake",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": member("ws-b", 2, healthy=False)}, None, SPLIT, Switchover("ws-b", "ws-a"))),
        Action.ACQUIRE,
        "no leader: trying to acquire leadership",
        id="unhealthy-candidate-not-waited-for",
    ),
    pytest.param(
        snap(Cluster({"ws-a": A, "ws-b": B}, None, SPLIT, switchover=Switchover("ws-b", "ws-a"))),
        Action.FOLLOW,
        "no leader: leaving leadership to switchover candidate ws-b",
        id="candidate-named",
    ),
    pytest.param(
        snap(None, running=("cam-1", "cam-2"), quorum=QuorumProbe(3, no_leader=("e1",), down=("e2", "e3"))),
        Action.FAILSAFE,
        "no quorum: keeping cam-1, cam-2, making no new assignment (etcd members: 1 without raft leader, 2 down of 3)",
        id="quorum-lost-confirmed",
    ),
    pytest.param(
        snap(None, running=("cam-1",), since_renewal=0.5, quorum=QuorumProbe(3, unknown=("e1", "e2", "e3"))),
        Action.WAIT,
        "etcd unreachable: keeping cam-1 until the fence at 1.6s without renewal (now 0.5s) "
        "(etcd members: 3 not answering of 3)",
        id="unreachable-before-fence",
    ),
    pytest.param(
        snap(
            None, running=("cam-1",), since_renewal=1.7, quorum=QuorumProbe(3, no_leader=("e1",), unknown=("e2", "e3"))
        ),
        Action.FENCE,
        "etcd unreachable for 1.7s and quorum loss not confirmed: stopping cam-1 "
        "(etcd members: 1 without raft leader, 2 not answering of 3)",
        id="cut-off-fences",
    ),
]


@pytest.mark.parametrize(("snapshot", "action", "reason"), CASES)
def test_decide(snapshot: Snapshot, action: Action, reason: str) -> None:
    decision = decide(snapshot)
    assert (decision.action, decision.reason) == (action, reason)


def test_fence_decision_stops_everything() -> None:
    d = decide(snap(None, running=("cam-1",), since_renewal=5.0))
    assert d.run == {}


def test_acquired_leader_spreads_evenly() -> None:
    d = decide(snap(Cluster({"ws-a": A, "ws-b": B}, Leader("ws-a", 3), None)))
    assert d.action is Action.LEAD and d.assignment is not None
    assert d.assignment.cameras == {"cam-1": "ws-a", "cam-2": "ws-b", "cam-3": "ws-a"}
    assert d.assignment.sessions == {"ws-a": 1, "ws-b": 2}
    assert d.run == {"cam-1": 10.0, "cam-3": 10.0} and d.token == 3
    assert d.reason == "assigning cam-1 to ws-a; assigning cam-2 to ws-b; assigning cam-3 to ws-a"


def test_survivor_over_capacity_runs_everything_slower() -> None:
    plan = plan_assignment(CAMS, {"ws-a": member("ws-a", 1, capacity=2)}, SPLIT, token=9)
    assert plan.assignment.cameras == {"cam-1": "ws-a", "cam-2": "ws-a", "cam-3": "ws-a"}
    assert plan.assignment.fps == {"cam-1": 6.667, "cam-2": 6.667, "cam-3": 6.667}
    assert plan.notes[-1] == "ws-a runs 3 cameras with capacity 2: cam-1, cam-2, cam-3 at 66% of full rate"


def test_returning_member_gets_a_camera_in_two_steps() -> None:
    """Over capacity on ws-a and room on ws-b: cam-3 is first unassigned, given to ws-b only once ws-a stopped it."""
    cams_all_a = Assignment(dict.fromkeys(CAMS, "ws-a"), dict.fromkeys(CAMS, 6.667), token=9, sessions={"ws-a": 1})
    a_busy = member("ws-a", 1, capacity=2, running=("cam-1", "cam-2", "cam-3"))
    step1 = plan_assignment(CAMS, {"ws-a": a_busy, "ws-b": member("ws-b", 4, capacity=2)}, cams_all_a, token=9)
    assert step1.assignment.cameras["cam-3"] is None and step1.assignment.moving == {"cam-3": "ws-a"}
    assert step1.notes == [
        "moving cam-3 from ws-a to make room on ws-b: ws-a over capacity, waiting for ws-a to stop it"
    ]
    still = plan_assignment(CAMS, {"ws-a": a_busy, "ws-b": member("ws-b", 4, capacity=2)}, step1.assignment, token=9)
    assert still.assignment.cameras["cam-3"] is None
    a_done = member("ws-a", 1, capacity=2, running=("cam-1", "cam-2"))
    step2 = plan_assignment(CAMS, {"ws-a": a_done, "ws-b": member("ws-b", 4, capacity=2)}, step1.assignment, token=9)
    assert step2.assignment.cameras == {"cam-1": "ws-a", "cam-2": "ws-a", "cam-3": "ws-b"}
    assert step2.assignment.fps == {"cam-1": 10.0, "cam-2": 10.0, "cam-3": 10.0}
    assert step2.notes == ["moved cam-3 to ws-b: ws-a stopped it"]


def test_sticky_without_rebalance_and_even_with_it() -> None:
    lopsided = Assignment(dict.fromkeys(CAMS, "ws-a"), dict.fromkeys(CAMS, 10.0), token=9, sessions={"ws-a": 1})
    members = {"ws-a": A, "ws-b": B}
    assert plan_assignment(CAMS, members, lopsided, token=9).assignment.cameras == lopsided.cameras
    moved = plan_assignment(CAMS, members, lopsided, token=9, rebalance=True)
    assert moved.assignment.moving == {"cam-3": "ws-a"}
    assert moved.notes == [
        "moving cam-3 from ws-a to make room on ws-b: rebalance asked for, waiting for ws-a to stop it"
    ]


def test_unhealthy_owner_loses_its_cameras() -> None:
    plan = plan_assignment(CAMS, {"ws-a": A, "ws-b": member("ws-b", 2, healthy=False)}, SPLIT, token=7)
    assert plan.assignment.cameras["cam-3"] is None and plan.assignment.moving == {"cam-3": "ws-b"}
    assert plan.notes[0] == "moving cam-3 from ws-b: member unhealthy, waiting for ws-b to stop it"


def test_quorum_probe_majority_rule() -> None:
    assert QuorumProbe(3, no_leader=("a",), down=("b",)).quorum_impossible
    assert not QuorumProbe(3, no_leader=("a",), unknown=("b", "c")).quorum_impossible
    assert not QuorumProbe(3, down=("a",), with_leader=("b", "c")).quorum_impossible
