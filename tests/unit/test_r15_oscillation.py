"""Adversarial review of issue 15: hysteresis does not stop a bounce when the bad probe's cause leaves with the
cameras (an inference probe that misses its deadline under the load of the node's cameras, or a camera stalled in
this node's pipeline: once moved, its probe is gone). The verdict flips bad -> good -> bad and the cameras bounce
between the nodes for as long as it lasts. Fixed by the hysteresis's memory: each return waits twice as long."""

from __future__ import annotations

from cluster.health import Hysteresis
from failover.loop import HealthReport
from tests.unit.test_loop import started_pair


def test_r15_cameras_bounce_when_the_cause_leaves_with_them() -> None:
    w = started_pair()  # ws-a: cam-1, cam-3; ws-b: cam-2
    hyst = Hysteresis(3, 10)  # the defaults, one evaluation a tick (0.5 s)

    def verdict() -> HealthReport:
        loaded = bool(w.runners["ws-b"].running())  # ws-b's inference misses its deadline while it runs a camera
        healthy = hyst.update(not loaded)
        return HealthReport(healthy, () if healthy else ("inference: no answer to a probe frame",))

    w.loops["ws-b"].health_source = verdict
    t0 = w.clock.now
    for _ in range(240):  # 2 minutes
        w.tick("ws-a", "ws-b")
    moves = [e for e in w.since(t0) if e[2] == "start"]
    print(len(moves), "camera starts in 2 minutes:", moves)
    back = [e[0] - t0 for e in moves if e[1] == "ws-b"]
    print("back on ws-b at", back)
    # 30 starts before: back every 8 s. Now each return waits twice as long as the one before (10, 20, 40 good
    # ticks of 0.5 s, plus the handover), so the bounces thin out: 9 starts, the last return at 86.5 s.
    assert (len(moves), back) == (9, [7.5, 20.5, 43.5, 86.5])
