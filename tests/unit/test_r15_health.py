"""Adversarial review of issue 15 (health): reproductions. Each test asserts the behaviour the docs promise; a
failing test is a finding."""

from __future__ import annotations

from cluster.health import HealthMonitor, Settings
from tests.unit.test_health import Fake, monitor


def test_r15_a_recovered_camera_is_not_listed_failing_while_it_processes_here() -> None:
    """Docstring: a failing camera is remembered FAILING_MEMORY_S 'after the node stopped the camera'. A camera that
    recovered and processes frames here must not stay listed as failing."""
    fake = Fake()
    m = monitor(fake)
    m.evaluate()
    fake.statuses["cam-1"].update(state="reconnecting", error="connection refused")
    for _ in range(3):
        fake.step()
        m.evaluate()
    assert m.verdict().failing == ("cam-1",)
    fake.statuses["cam-1"].update(state="running", error="")  # source back: frames flow again
    for _ in range(20):  # 10 s of frames processed here
        fake.step()
        v = m.evaluate()
    probe = dict((p.name, p) for p in v.probes)["camera:cam-1"]
    assert probe.ok, probe
    assert v.failing == (), f"cam-1 processes frames here yet is still listed failing: {v.failing}"


def test_r15_one_malformed_camera_status_freezes_the_verdict() -> None:
    """A status that the camera loop cannot parse makes evaluate() raise at every period (outside every _guard):
    the published verdict is then whatever it was before (here 'healthy') forever, with inference hung."""
    fake = Fake()
    m = monitor(fake)
    m.evaluate()
    fake.inference = (None, "")  # inference hangs: the node must turn unhealthy after 3 ticks
    fake.statuses["cam-2"] = {"state": "restarting", "frames": "n/a"}  # e.g. a status an actor answered oddly
    raised = 0
    for _ in range(6):
        fake.step()
        try:
            m.evaluate()
        except Exception:
            raised += 1
    print("evaluate raised", raised, "times; published:", m.report())
    assert m.report().healthy is False, "inference hung for 3 s, yet the node still publishes healthy"


def test_r15_the_clock_probe_passes_for_a_stepped_clock_when_the_peer_is_unknown() -> None:
    """The clock probe's pass is what tells each camera worker 'the step was a correction, the new time agrees with
    the peer's' (worker._clock_stepped via clock_ok_at). With the peer unknown (its member key gone: the peer is
    down, or its wall field NaN) the probe passes and clock_ok_at advances although nothing was compared."""
    fake = Fake()
    m = monitor(fake)
    m.evaluate()
    fake.peer_wall = None  # the peer is down (or its key's wall is 0/NaN): no member wall to compare with
    fake.wall += 3600.0  # this node's wall clock is stepped by a broken time sync
    before = m.clock_ok_at
    fake.step()
    v = m.evaluate()
    clock = dict((p.name, p) for p in v.probes)["clock"]
    print("clock probe:", clock, "clock_ok_at", before, "->", m.clock_ok_at)
    assert m.clock_ok_at == before, "a stepped clock with no peer to compare was confirmed to the camera workers"


def test_r15_a_probe_failing_two_ticks_in_three_never_makes_the_node_unhealthy() -> None:
    """'alive but broken': inference misses its deadline 2 times out of 3 for 10 minutes; the node keeps its cameras
    (the existing test_a_flapping_probe_never_turns_the_node_unhealthy enshrines it)."""
    fake = Fake()
    m = HealthMonitor("ws-a", Settings(), fake.sources())  # the defaults: bad_ticks 3, good_ticks 10
    healthy = []
    for i in range(1200):  # 10 min at 0.5 s
        fake.inference = (None, "") if i % 3 != 2 else (0.05, "")
        fake.step()
        healthy.append(m.evaluate().healthy)
    bad = sum(1 for i in range(1200) if i % 3 != 2)
    print(f"{bad}/1200 inference probes failed; unhealthy ticks: {healthy.count(False)}")
    assert healthy.count(False) > 0


def test_r15_disk_probe_with_free_bytes_unknown_says_zero_free() -> None:
    from cluster.health import probe_disk

    p = probe_disk("", None, 256 * 1024 * 1024)
    print(p)
    assert "0 B free" not in p.reason, p.reason  # unknown is reported as '0 B free' (and passes)


def test_r15_a_correcting_step_marks_this_node_as_the_wrong_clock_forever() -> None:
    """ws-a's agent started before time sync; the sync steps its clock +8 s, setting it right (now equal to the
    peer's: the README calls that 'a step that agrees with the peer'). Days later the peer's clock drifts 10 s off
    (time sync dead there; a drift is no step, so the peer never counts it). ws-a, the one with the right clock, is
    the one declared unhealthy, and its cameras move to the node with the wrong clock."""
    fake = Fake()
    fake.wall -= 8.0  # wrong at start ...
    m = monitor(fake)
    fake.wall += 8.0  # ... set right by time sync: agrees with the peer
    for _ in range(5):
        fake.step()
        v = m.evaluate()
    assert v.healthy
    assert fake.peer_wall is not None
    fake.peer_wall -= 10.0  # the peer drifts off
    for _ in range(5):
        fake.step()
        v = m.evaluate()
    print(v.healthy, v.reasons)
    assert v.healthy, "the node whose clock is right is declared unhealthy"


def test_r15_a_health_evaluation_that_keeps_raising_turns_the_node_unhealthy() -> None:
    """The monitor's loop: an evaluation that raises every period counts as a failing one (it used to leave the last
    verdict, healthy, published for ever)."""
    import threading

    fake = Fake()
    m = monitor(fake)
    m.settings.period_s = 0.01
    assert m.evaluate().healthy
    calls = []

    def broken() -> None:
        calls.append(1)
        if len(calls) >= 5:
            stop.set()
        raise ValueError("a status nobody expected")

    m.evaluate = broken  # type: ignore[method-assign]
    stop = threading.Event()
    restarts: list[int] = []
    m.run(stop, restarts=lambda: restarts.append(1))
    assert (len(calls), len(restarts), m.report().healthy) == (5, 5, False)
    assert "health evaluation failed: ValueError" in m.report().reasons[0]


def test_r15_a_stepped_clock_with_no_peer_is_confirmed_by_time_synchronisation_only() -> None:
    """No peer to compare: the step is confirmed when the host's time synchronisation says the clock is
    synchronised (the step was its correction), and the probe becomes the new reference."""
    fake = Fake()
    sources = fake.sources()
    sync: list[bool | None] = [None]
    sources.time_synced = lambda: sync[0]
    m = HealthMonitor("ws-a", Settings(bad_ticks=3, good_ticks=4), sources)
    m.evaluate()
    fake.peer_wall = None
    fake.wall += 3600.0
    fake.step()
    v = m.evaluate()
    clock = dict((p.name, p) for p in v.probes)["clock"]
    assert (clock.ok, clock.counts) == (False, False)
    assert "neither a peer nor time synchronisation confirms the new time" in clock.reason
    sync[0] = True
    fake.step()
    before = m.clock_ok_at
    assert dict((p.name, p) for p in m.evaluate().probes)["clock"].ok
    assert m.clock_ok_at > before
    sync[0] = None  # the step is the reference now: nothing left to confirm
    fake.step()
    assert dict((p.name, p) for p in m.evaluate().probes)["clock"].ok
