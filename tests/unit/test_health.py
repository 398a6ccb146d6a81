"""The health probes, the verdict and its hysteresis (cluster.health), with in-memory fake sources and a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.health import (
    FAILING_MEMORY_S,
    HealthMonitor,
    Hysteresis,
    Probe,
    Settings,
    Sources,
    backoff,
    disk_state,
    probe_camera,
    probe_clock,
    probe_disk,
    probe_inference,
    probe_replication,
)
from failover.loop import HealthReport

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("latency", "error", "expected"),
    [
        (0.05, "", Probe("inference", True, "inference answered in 0.050s")),
        (None, "", Probe("inference", False, "inference: no answer to a probe frame (deadline 2s)")),
        (2.5, "", Probe("inference", False, "inference: answered after 2.5s to a probe frame (deadline 2s)")),
        (
            0.01,
            "RuntimeError: session broken",
            Probe("inference", False, "inference failed on a probe frame: RuntimeError: session broken"),
        ),
    ],
)
def test_inference_probe(latency: float | None, error: str, expected: Probe) -> None:
    assert probe_inference(latency, error, 2.0) == expected


@pytest.mark.parametrize(
    ("status", "idle", "expected"),
    [
        ({"state": "running"}, 1.0, Probe("camera:cam-1", True, "cam-1: processing")),
        (
            {"state": "running"},
            6.0,
            Probe("camera:cam-1", False, "cam-1: no frame processed for 6.0s (state running; limit 5s)"),
        ),
        (
            {"state": "reconnecting", "error": "cannot open rtsp://10.0.0.5/s1"},
            60.0,
            Probe("camera:cam-1", False, "cam-1: source reconnecting: cannot open rtsp://10.0.0.5/s1", counts=False),
        ),
        ({"state": "unreachable"}, 60.0, Probe("camera:cam-1", False, "cam-1: source unreachable", counts=False)),
        (
            {"state": "stalled", "error": "no frame from the stream for 2.1 s"},
            2.5,
            Probe("camera:cam-1", False, "cam-1: source stalled: no frame from the stream for 2.1 s", counts=False),
        ),
        (
            {"state": "ended", "error": "RuntimeError: session broken", "capture": {"state": "stopped"}},
            1.0,
            Probe("camera:cam-1", False, "cam-1: pipeline ended: RuntimeError: session broken"),
        ),
        (
            {"state": "ended", "error": "", "capture": {"state": "ended"}},
            1.0,
            Probe("camera:cam-1", False, "cam-1: source ended", counts=False),
        ),
        ({"state": "fenced"}, 60.0, Probe("camera:cam-1", False, "cam-1: paused on its fence", counts=False)),
        ({"state": "starting", "first_frame_at": None}, 3.0, Probe("camera:cam-1", True, "cam-1: starting")),
        (
            {"state": "starting", "first_frame_at": None},
            12.2,
            Probe("camera:cam-1", False, "cam-1: starting, no frame yet after 12.2s", counts=False),
        ),
        (
            {"state": "restarting", "error": "actor died"},
            5.5,
            Probe("camera:cam-1", False, "cam-1: no frame processed for 5.5s (state restarting; limit 5s)"),
        ),
    ],
)
def test_camera_probe(status: dict[str, Any], idle: float, expected: Probe) -> None:
    assert probe_camera("cam-1", status, idle, 5.0) == expected


def test_disk_probe() -> None:
    assert probe_disk("", 300 * MiB, 256 * MiB) == Probe("disk", True, "data dir writable, 300.0 MiB free")
    assert probe_disk("", 100 * MiB, 256 * MiB) == Probe(
        "disk", False, "data dir has 100.0 MiB free, less than the minimum 256.0 MiB"
    )
    assert probe_disk("OSError: Read-only file system", 300 * MiB, 256 * MiB) == Probe(
        "disk", False, "data dir not writable: OSError: Read-only file system"
    )


def test_disk_state_writes_and_removes_its_probe_file(tmp_path: Path) -> None:
    error, free = disk_state(tmp_path)
    assert error == ""
    assert free is not None and free > 0
    assert list(tmp_path.iterdir()) == []
    error, free = disk_state(tmp_path / "missing")
    assert error == "FileNotFoundError: No such file or directory"
    assert free is None


def test_replication_is_reported_never_counted() -> None:
    assert probe_replication("ws-b", False, "unavailable") == Probe(
        "replication", False, "replication to ws-b down: unavailable", counts=False
    )
    assert probe_replication("ws-b", True, "") == Probe("replication", True, "replication to ws-b connected", False)


@pytest.mark.parametrize(
    ("offset", "stepped", "expected"),
    [
        (0.3, 0.0, Probe("clock", True, "clock offset to the peer within bounds")),
        (-300.0, 0.0, Probe("clock", False, "clock offset to ws-b -300.0s (bound 5s)", counts=False)),
        (
            300.0,
            300.0,
            Probe(
                "clock",
                False,
                "clock offset to ws-b +300.0s (bound 5s); this node's wall clock stepped by +300.0s",
                counts=True,
            ),
        ),
        (None, 0.0, Probe("clock", True, "")),
        (0.2, 300.0, Probe("clock", True, "wall clock stepped by +300.0s since start", counts=False)),  # agreed
        (
            None,
            300.0,
            Probe(
                "clock",
                False,
                "wall clock stepped by +300.0s and neither a peer nor time synchronisation confirms the new time: the"
                " cameras stay paused until one does (check the clock: timedatectl)",
                counts=False,
            ),
        ),
    ],
)
def test_clock_probe_counts_only_when_this_node_stepped(offset: float | None, stepped: float, expected: Probe) -> None:
    assert probe_clock("ws-b", offset, stepped, 5.0) == expected


@pytest.mark.parametrize(
    ("results", "states"),
    [
        ("bbb", [True, True, False]),
        ("bbgbbb", [True, True, True, False, False, False]),  # 3 bad among the last 5: a probe failing 2 in 3 is sick
        ("bgbgggbgg", [True] * 9),  # 2 bad among the last 5 at most: one bad tick now and then is not
        ("bggbggb", [True, True, True, True, True, True, True]),
        ("bbbgggb", [True, True, False, False, False, True, True]),
        ("bbbggbgggg", [True, True, False, False, False, False, False, False, True, True]),  # the bad tick resets
    ],
)
def test_hysteresis_three_bad_three_good(results: str, states: list[bool]) -> None:
    h = Hysteresis(bad=3, good=3)
    assert [h.update(r == "g") for r in results] == states


def test_hysteresis_refuses_zero_ticks() -> None:
    with pytest.raises(ValueError, match="at least 1 tick each way, got bad=0 good=1"):
        Hysteresis(0, 1)


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(n, 0.5, 4.0) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


class Fake:
    """The monitor's I/O edges in memory: each field is what the next evaluation reads."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_800_000_000.0
        self.inference: tuple[float | None, str] = (0.05, "")
        self.statuses: dict[str, dict[str, Any]] = {
            "cam-1": {"state": "running", "frames": 0},
            "cam-2": {"state": "running", "frames": 0},
        }
        self.disk: tuple[str, int | None] = ("", 300 * MiB)
        self.peer_wall: float | None = self.wall

    def sources(self) -> Sources:
        return Sources(
            inference=lambda deadline: self.inference,
            cameras=lambda: {c: dict(s) for c, s in self.statuses.items()},
            disk=lambda: self.disk,
            replication=lambda: ("ws-b", True, ""),
            peer_wall=lambda: ("ws-b", self.peer_wall),
            wall=lambda: self.wall,
            monotonic=lambda: self.now,
        )

    def step(self, seconds: float = 0.5, frames: int = 5) -> None:
        self.now += seconds
        self.wall += seconds
        if self.peer_wall is not None:
            self.peer_wall += seconds
        for s in self.statuses.values():
            if s["state"] == "running" and not s.get("stuck"):
                s["frames"] += frames


def monitor(fake: Fake) -> HealthMonitor:
    return HealthMonitor(
        "ws-a", Settings(bad_ticks=3, good_ticks=4, inference_deadline_s=2.0, camera_stale_s=5.0), fake.sources()
    )


def test_a_healthy_node_reports_no_reason() -> None:
    fake = Fake()
    m = monitor(fake)
    v = m.evaluate()
    assert (v.ok_now, v.healthy, v.reasons, v.failing) == (True, True, (), ())
    assert m.report() == HealthReport(True, (), ())
    assert sorted(v.as_dict()["probes"]) == [
        "camera:cam-1",
        "camera:cam-2",
        "clock",
        "disk",
        "inference",
        "replication",
    ]


def test_a_hung_inference_makes_the_node_unhealthy_after_three_ticks_and_back_after_four() -> None:
    fake = Fake()
    m = monitor(fake)
    m.evaluate()
    woken: list[bool] = []  # the HA loop is woken at each change of the verdict, never otherwise
    m.on_change = lambda: woken.append(m.report().healthy)
    fake.inference = (None, "")
    verdicts = []
    for _ in range(3):
        fake.step()
        verdicts.append(m.evaluate().healthy)
    assert verdicts == [True, True, False]
    assert woken == [False]
    assert m.report() == HealthReport(False, ("inference: no answer to a probe frame (deadline 2s)",), ())
    fake.inference = (0.04, "")
    back = []
    for _ in range(4):
        fake.step()
        back.append(m.evaluate().healthy)
    assert back == [False, False, False, True]
    assert woken == [False, True]
    assert m.report() == HealthReport(True, (), ())


def test_a_stalled_camera_counts_against_the_node_after_the_stale_limit() -> None:
    fake = Fake()
    m = monitor(fake)
    m.evaluate()
    fake.statuses["cam-2"]["stuck"] = True  # the capture runs but no frame gets through the pipeline
    oks = []
    for _ in range(14):  # 7 s
        fake.step()
        oks.append(m.evaluate().ok_now)
    assert oks == [True] * 10 + [False] * 4  # 5.5 s idle > 5 s at the 11th tick
    assert m.report().healthy is False
    assert m.report().reasons == ("cam-2: no frame processed for 7.0s (state running; limit 5s)",)


def test_a_camera_failing_at_its_source_is_listed_not_counted_and_remembered() -> None:
    fake = Fake()
    m = monitor(fake)
    m.evaluate()
    fake.statuses["cam-1"].update(state="reconnecting", error="connection refused")
    listed = []
    for _ in range(3):
        fake.step()
        v = m.evaluate()
        listed.append(v.failing)
    assert listed == [(), (), ("cam-1",)]
    assert v.healthy and v.ok_now
    assert v.reasons == ("cam-1: source reconnecting: connection refused (reported, not counted)",)
    del fake.statuses["cam-1"]  # moved to the other node: still listed, so it does not come straight back
    fake.step(FAILING_MEMORY_S - 1.0)
    assert m.evaluate().failing == ("cam-1",)
    fake.step(1.5)
    assert m.evaluate().failing == ()


def test_a_full_disk_and_a_probe_that_raises() -> None:
    fake = Fake()
    m = monitor(fake)
    fake.disk = ("", 10 * MiB)

    def broken() -> dict[str, dict[str, Any]]:
        raise RuntimeError("ray is gone")

    m.sources.cameras = broken
    for _ in range(3):
        v = m.evaluate()
    assert not v.healthy
    assert v.reasons == (
        "camera statuses unreadable: ray is gone",
        "data dir has 10.0 MiB free, less than the minimum 256.0 MiB",
    )


def test_a_probe_failing_two_ticks_in_three_turns_the_node_unhealthy_and_keeps_it() -> None:
    """Review of issue 15: a probe failing two ticks in three (a sick inference) used to be ignored for ever (only
    failures in a row counted). Now three failures among the last five turn the node unhealthy, and it turns healthy
    again only after ten good ticks in a row, so the flapping keeps its cameras away instead of bouncing them."""
    fake = Fake()
    m = monitor(fake)
    states = []
    for i in range(40):
        fake.inference = (None, "") if i % 3 != 2 else (0.05, "")  # two bad, one good, again and again
        fake.step()
        states.append(m.evaluate().healthy)
    assert states == [True] * 3 + [False] * 37


def test_a_clock_step_of_this_node_counts() -> None:
    fake = Fake()
    m = monitor(fake)
    m.evaluate()
    fake.wall += 300.0  # this node's wall clock jumps 5 minutes; the peer's does not
    for _ in range(3):
        fake.step()
        v = m.evaluate()
    assert not v.healthy
    assert v.reasons == ("clock offset to ws-b +300.0s (bound 5s); this node's wall clock stepped by +300.0s",)


def test_the_peer_clock_off_is_reported_only() -> None:
    fake = Fake()
    m = monitor(fake)
    assert fake.peer_wall is not None
    fake.peer_wall -= 120.0
    for _ in range(3):
        fake.step()
        v = m.evaluate()
    assert v.healthy
    assert v.reasons == ("clock offset to ws-b +120.0s (bound 5s) (reported, not counted)",)


def test_hysteresis_waits_twice_as_long_after_each_recent_turn() -> None:
    h = Hysteresis(bad=1, good=2, memory=20)
    assert [h.update(r == "g") for r in "bgg"] == [False, False, True]  # 2 good after the first turn
    assert [h.update(r == "g") for r in "bgggg"] == [False, False, False, False, True]  # 4 after the second
    for _ in range(30):
        h.update(True)  # both turns forgotten (memory: 20 ticks)
    assert [h.update(r == "g") for r in "bgg"] == [False, False, True]
