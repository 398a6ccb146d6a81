"""Adversarial review of issue 15: a lost (malformed, read as absent) assignment while a member is unhealthy. The
'keep it where it runs' rule looks at healthy members only, so a camera running on the live but unhealthy member is
given straight to the healthy one instead of going through the two-step move: both run it at once."""

from __future__ import annotations

from failover.dcs import Member
from failover.decide import plan_assignment

CAMS = {"cam-1": 10.0, "cam-2": 10.0}


def test_r15_a_lost_assignment_never_gives_a_camera_still_running_on_an_unhealthy_member() -> None:
    members = {
        "ws-a": Member("ws-a", True, 3, ("cam-1",), session=1),
        "ws-b": Member("ws-b", False, 3, ("cam-2",), session=2),  # alive, unhealthy, still runs cam-2
    }
    plan = plan_assignment(CAMS, members, None, 9)  # the assignment key was malformed: read as absent
    a = plan.assignment
    print(a.cameras, a.moving, plan.notes)
    assert a.cameras["cam-2"] is None and a.moving.get("cam-2") == "ws-b", (
        "cam-2 given to ws-a while ws-b still runs it: a double run"
    )


def test_r15_loops_a_lost_assignment_and_an_unhealthy_member_run_a_camera_twice() -> None:
    from failover.loop import HealthReport
    from failover.memory_dcs import _KV
    from tests.unit.test_loop import started_pair

    w = started_pair()  # ws-a: cam-1, cam-3; ws-b: cam-2
    good = w.store.keys["/edgepair/s1/assignment"]
    w.store.keys["/edgepair/s1/assignment"] = _KV('{"token": "x"}', good.create_revision, good.mod_revision + 1)
    w.loops["ws-b"].health_source = lambda: HealthReport(False, ("inference: no answer",))
    w.tick("ws-b")  # publishes its unhealthy verdict, reads no assignment: keeps cam-2
    w.loops["ws-a"].run_once()  # the leader plans from no assignment
    both = w.running()
    print(both)
    assert not (both["ws-a"] & both["ws-b"]), f"run on both nodes at once: {both['ws-a'] & both['ws-b']}"
