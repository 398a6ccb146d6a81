"""Adversarial review of issue 15: the decision core and the member key under unhealthy / malformed inputs."""

from __future__ import annotations

import json

import pytest

from cluster.errors import DCSError
from failover.dcs import Assignment, Cluster, Member
from failover.decide import Action, Snapshot, decide, plan_assignment

CAMS = {"cam-1": 10.0, "cam-2": 10.0}


def test_r15_a_lone_unhealthy_survivor_never_takes_the_dead_leaders_cameras() -> None:
    """ws-a (leader, cam-1) dies; ws-b is alive but unhealthy (e.g. one stale camera, or 200 MiB free). Nobody ever
    acquires, cam-1 runs nowhere until ws-b's verdict turns good. plan_assignment itself prefers an unhealthy live
    member to nothing ('member unhealthy' with nobody eligible: the camera stays), but election does not."""
    prev = Assignment({"cam-1": "ws-a", "cam-2": "ws-b"}, dict(CAMS), 7, {"ws-a": 1, "ws-b": 2})
    cluster = Cluster({"ws-b": Member("ws-b", False, 2, ("cam-2",), session=2)}, None, prev)
    d = decide(Snapshot("ws-b", CAMS, frozenset({"cam-2"}), cluster, session=2, healthy=False))
    print(d)
    assert d.action is Action.ACQUIRE or (d.run is not None and "cam-1" in d.run), "cam-1 runs nowhere"


def test_r15_an_unhealthy_leader_gives_a_dead_peers_cameras_to_nobody() -> None:
    """Same with the unhealthy node already leading: the dead peer's camera is an orphan with nobody eligible."""
    prev = Assignment({"cam-1": "ws-a", "cam-2": "ws-b"}, dict(CAMS), 7, {"ws-a": 1, "ws-b": 2})
    members = {"ws-b": Member("ws-b", False, 2, ("cam-2",), session=2)}
    plan = plan_assignment(CAMS, members, prev, 7)
    print(plan.assignment.cameras, plan.notes)
    assert plan.assignment.cameras["cam-2"] == "ws-b"  # its own camera stays on the unhealthy member...
    assert plan.assignment.cameras["cam-1"] == "ws-b", "...but the dead peer's camera goes nowhere"


def test_r15_member_key_healthy_as_a_string_is_malformed() -> None:
    raw = json.dumps({"name": "ws-b", "healthy": "false"})
    with pytest.raises(DCSError, match="healthy must be true or false"):  # read as absent, never as healthy
        Member.from_json(raw, session=3)


def test_r15_member_key_running_as_a_string_is_malformed() -> None:
    with pytest.raises(DCSError, match="running must be a list"):  # was split into characters
        Member.from_json(json.dumps({"name": "ws-b", "running": "cam-1"}), session=3)


def test_r15_member_key_capacity_zero_or_negative_is_malformed() -> None:
    for cap in (0, -2, True, 1.5):
        with pytest.raises(DCSError, match="capacity must be a whole number"):  # gave fps 0 or negative
            Member.from_json(json.dumps({"name": "ws-b", "capacity": cap}), session=3)


def test_r15_assignment_key_nan_fps_is_malformed() -> None:
    for bad in (float("nan"), float("inf"), -1e9, 0):
        raw = json.dumps({"cameras": {"cam-1": "ws-b"}, "fps": {"cam-1": bad}, "token": 7, "sessions": {"ws-b": 3}})
        with pytest.raises(DCSError, match="must be a positive number"):  # NaN reached the runner
            Assignment.from_json(raw)


def test_r15_member_key_name_field_shadows_another_member() -> None:
    """The member's identity is the JSON 'name' field, not its key members/<node>: a key members/ws-x holding
    name ws-a replaces ws-a's entry (healthy or not, whatever it says), depending on key order."""
    from failover.dcs import Member as M

    # what EtcdDCS.get_cluster does for each key, in key order
    members = {}
    for key, raw, rev in (
        ("members/ws-a", M("ws-a", True, 2, ("cam-1",)).to_json(), 10),
        ("members/ws-z", M("ws-a", False, 2, ()).to_json(), 11),  # stale/copied key of another host
    ):
        try:
            member = M.from_json(raw, session=rev, key_name=key.removeprefix("members/"))
        except DCSError:
            continue  # malformed: read as absent (what both DCS do)
        members[member.name] = member
    assert members["ws-a"].session == 10, "ws-a is read with the other key's session and health"
