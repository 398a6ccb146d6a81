"""The test-only break switch ``EDGEPAIR_UNSAFE_BREAK`` (``cluster.unsafe``): parsing, and what each break does in
the camera worker (on a fake clock), the node's runner and the node's /health."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cluster import unsafe
from cluster.config import parse_config
from cluster.errors import ConfigError
from cluster.node import Node
from failover.dcs import Assignment, Cluster, Leader
from failover.decide import given_elsewhere
from tests.unit.test_fence_runner import Factory, FakeRay, make_runner
from tests.unit.test_fence_runner import FakeClock as RunnerClock
from tests.unit.test_fence_worker import (
    T0,
    TOKEN,
    D,
    FakeClock,
    Frame,
    make_worker,
    play,
    seg,
    segments,
    ts,
)

# --- parsing -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, frozenset()),
        ({"EDGEPAIR_UNSAFE_BREAK": ""}, frozenset()),
        ({"EDGEPAIR_UNSAFE_BREAK": " , ,"}, frozenset()),
        ({"EDGEPAIR_UNSAFE_BREAK": "fence"}, frozenset({"fence"})),
        ({"EDGEPAIR_UNSAFE_BREAK": "drop-window"}, frozenset({"drop-window"})),
        ({"EDGEPAIR_UNSAFE_BREAK": " drop-window , fence,fence"}, frozenset({"fence", "drop-window"})),
    ],
)
def test_breaks_reads_comma_separated_values(env: dict[str, str], expected: frozenset[str]) -> None:
    assert unsafe.breaks(env) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "fense",
            "EDGEPAIR_UNSAFE_BREAK='fense': unknown value 'fense'; allowed values: drop-window, fence"
            " (comma-separated; a test-only switch, never set in production)",
        ),
        (
            "fence,Drop-Window,x",
            "EDGEPAIR_UNSAFE_BREAK='fence,Drop-Window,x': unknown value 'Drop-Window', 'x'; allowed values:"
            " drop-window, fence (comma-separated; a test-only switch, never set in production)",
        ),
    ],
)
def test_an_unknown_value_is_a_config_error_in_one_line(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        unsafe.breaks({"EDGEPAIR_UNSAFE_BREAK": value})
    assert str(err.value) == message


def test_breaks_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPAIR_UNSAFE_BREAK", "fence")
    assert unsafe.breaks() == frozenset({"fence"})
    monkeypatch.delenv("EDGEPAIR_UNSAFE_BREAK")
    assert unsafe.breaks() == frozenset()


@pytest.mark.parametrize(
    ("start", "dropped"),
    [
        (T0, True),
        (T0 + 1, False),
        (T0 + 19, False),
        (T0 + 20, True),
        (T0 + 40, True),
        (T0 + 19.5, True),
        (T0 - 1, False),
    ],
)
def test_drop_window_drops_windows_starting_on_a_whole_multiple_of_20_s(start: float, dropped: bool) -> None:
    assert unsafe.drops_window(start) is dropped


def cluster(leader_token: int, token: int, cameras: dict[str, str | None], moving: dict[str, str]) -> Cluster:
    assignment = Assignment(cameras=cameras, fps={}, token=token, moving=moving)
    return Cluster(members={}, leader=Leader("ws-b", leader_token), assignment=assignment)


GIVEN_ELSEWHERE = [
    (None, False),  # nothing read yet
    (Cluster(members={}, leader=None, assignment=None), False),
    (Cluster(members={}, leader=Leader("ws-b", 8), assignment=None), False),
    (cluster(8, 8, {"cam-1": "ws-a"}, {}), False),  # still mine
    (cluster(8, 7, {"cam-1": "ws-b"}, {}), False),  # stale: written under an older leader's token
    (cluster(8, 8, {"cam-1": None}, {}), False),  # no owner, not moving off this node
    (cluster(8, 8, {"cam-1": None}, {"cam-1": "ws-b"}), False),  # moving off another node
    (cluster(8, 8, {"cam-2": "ws-b"}, {}), False),  # another camera given away
    (cluster(8, 8, {"cam-1": "ws-b"}, {}), True),
    (cluster(8, 8, {"cam-1": None}, {"cam-1": "ws-a"}), True),  # moving off this node: first step to another
]


@pytest.mark.parametrize(("view", "expected"), GIVEN_ELSEWHERE)
def test_given_elsewhere(view: Cluster | None, expected: bool) -> None:
    assert given_elsewhere(view, "ws-a", "cam-1") is expected


# --- fence: the camera worker ----------------------------------------------------------------------------------------


def test_fence_break_the_worker_ignores_its_deadline(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, unsafe_break=frozenset({"fence"}))
    play(
        worker,
        [Frame(ts(k), 100.0 + k / 10) for k in range(4)]
        + [Frame(ts(4), 100.45, done=D), Frame(ts(6), 100.6), Frame(ts(11), 150.0), Frame(ts(12), 1e6)],
    )
    assert clock.now == 1e6
    assert worker.fence_deadline == D
    assert worker.frames == 8
    assert worker.fenced is False
    assert segments(tmp_path) == [seg(0, TOKEN, 6, ts(0), ts(6)), seg(1, TOKEN, 2, ts(11), ts(12))]


def test_fence_break_can_reach_a_standby_worker_through_activate(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, deadline=None, token=0)
    worker.start = lambda: True  # type: ignore[method-assign]
    worker.activate(4, None, 99.0, frozenset({"fence"}))
    assert (worker.unsafe_break, worker._fence_expired()) == (frozenset({"fence"}), False)
    worker.activate(4, None, 99.0, frozenset())
    assert (worker.unsafe_break, worker._fence_expired()) == (frozenset(), True)


# --- drop-window: the camera worker --------------------------------------------------------------------------------


def test_drop_window_break_processes_every_frame_and_writes_all_but_every_20th_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, deadline=None, unsafe_break=frozenset({"drop-window"}))
    frames = [Frame(ts(k), 100.0) for k in range(-10, 215, 5)]  # two frames a window, T0 - 1 s to T0 + 21.5 s
    with caplog.at_level(logging.DEBUG, logger="actors.worker"):
        play(worker, frames)
    assert worker.frames == len(frames) == 45
    assert worker.segments == 21
    whole = [seg(s, TOKEN, 2, ts(10 * s), ts(10 * s + 5)) for s in range(-1, 21) if s not in (0, 20)]
    assert segments(tmp_path) == [*whole, seg(21, TOKEN, 1, ts(210), ts(210))]
    assert [r.message for r in caplog.records if "UNSAFE" in r.message] == [
        f"camera cam-1: UNSAFE drop-window: dropped window {T0:.3f}-{T0 + 1:.3f}",
        f"camera cam-1: UNSAFE drop-window: dropped window {T0 + 20:.3f}-{T0 + 21:.3f}",
    ]
    assert {r.levelname for r in caplog.records if "UNSAFE" in r.message} == {"DEBUG"}
    # Its own counters show the loss the drills measure: 4 frames processed (2 per dropped window), never written.
    st = worker.status()
    assert (st["frames"], st["frames_written"], st["frames_pending"]) == (45, 41, 0)


def test_without_the_break_every_window_is_written(tmp_path: Path) -> None:
    worker = make_worker(tmp_path, FakeClock(100.0), deadline=None)
    play(worker, [Frame(ts(k), 100.0) for k in range(-10, 215, 5)])
    assert worker.segments == 23
    assert [s[1] for s in segments(tmp_path)] == [T0 + s for s in range(-1, 22)]
    st = worker.status()
    assert (st["frames"], st["frames_written"], st["frames_pending"]) == (45, 45, 0)


# --- fence: the node's runner --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("view", "given"), GIVEN_ELSEWHERE)
@pytest.mark.parametrize("broken", [False, True])
def test_fence_break_the_runner_stops_a_camera_only_when_it_is_given_elsewhere(
    tmp_path: Path, view: Cluster | None, given: bool, broken: bool
) -> None:
    factory, ray = Factory(), FakeRay()
    runner = make_runner(
        tmp_path,
        RunnerClock(100.0),
        factory,
        ray,
        unsafe_break=frozenset({"fence"} if broken else ()),
        cluster=lambda: view,
    )
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)
    runner.stop_camera("cam-1")  # what the HA loop does on a lost lease, a fence, a demotion, a reassignment
    stopped = given or not broken
    assert runner.running() == (set() if stopped else {"cam-1"})
    assert ray.killed == ([0] if stopped else [])


def test_fence_break_the_runner_stops_everything_on_shutdown(tmp_path: Path) -> None:
    factory, ray = Factory(), FakeRay()
    runner = make_runner(tmp_path, RunnerClock(100.0), factory, ray, unsafe_break=frozenset({"fence"}))
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)
    runner.start_camera("cam-2", 5.0, 5)
    runner.stop_camera("cam-1")
    assert runner.running() == {"cam-1", "cam-2"}
    runner.shutting_down = True
    runner.stop_camera("cam-1")
    runner.stop_camera("cam-2")
    assert runner.running() == set()
    assert ray.killed == [0, 1]


def test_fence_break_a_new_rate_still_restarts_the_camera(tmp_path: Path) -> None:
    factory, ray = Factory(), FakeRay()
    runner = make_runner(tmp_path, RunnerClock(100.0), factory, ray, unsafe_break=frozenset({"fence"}))
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)
    runner.start_camera("cam-1", 4.0, 5)
    assert ray.killed == [0]
    assert runner.running() == {"cam-1"}


def test_the_runner_hands_its_breaks_to_every_actor_it_activates(tmp_path: Path) -> None:
    factory = Factory()
    broken = frozenset({"drop-window"})
    runner = make_runner(tmp_path, RunnerClock(100.0), factory, unsafe_break=broken)
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)  # no standby actor: an idle one, activated with the breaks
    runner.prepare_standby()
    runner.start_camera("cam-2", 10.0, 5)  # the standby actor, activated with the breaks
    assert factory.made == [
        ("cam-1", {"token": 0, "fps": None, "fence_deadline": None, "autostart": False}),
        ("cam-2", {"token": 0, "fps": None, "fence_deadline": None, "autostart": False}),
    ]
    first, second = factory.handles
    assert first.calls == [("activate", 5, 10.0, 101.6, broken)]
    assert second.calls == [("activate", 5, 5.0, 101.6, broken)]
    first.status_doc = {"active": False, "token": 0}  # Ray restarted it from its constructor: idle, without the breaks
    second.status_doc = {"active": True, "token": 5}
    runner.statuses()
    # the planned rate again (it was None for a camera without a configured fps, issue 16: the source's full rate)
    assert first.calls[1:] == [("status",), ("activate", 5, 10.0, 101.6, broken)]
    assert second.calls[1:] == [("status",)]


# --- the node ------------------------------------------------------------------------------------------------------

NODE_CONFIG = """
store: {id: s1, timezone: UTC}
security: {tls: false}
cameras:
  - {id: cam-1, source: clip.mp4}
cluster:
  etcd_endpoints: [http://127.0.0.1:2379, http://127.0.0.1:2381, http://127.0.0.1:2383]
  nodes: [{name: ws-a}, {name: ws-b, flight_port: 8816, metrics_port: 9102}]
"""


@pytest.mark.parametrize(("value", "health"), [(None, []), ("", []), ("fence,drop-window", ["drop-window", "fence"])])
def test_the_node_reads_the_switch_once_warns_and_reports_it_in_health(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    value: str | None,
    health: list[str],
) -> None:
    if value is None:
        monkeypatch.delenv("EDGEPAIR_UNSAFE_BREAK", raising=False)
    else:
        monkeypatch.setenv("EDGEPAIR_UNSAFE_BREAK", value)
    with caplog.at_level(logging.WARNING, logger="cluster.node"):
        node = Node(parse_config(NODE_CONFIG, base_dir=tmp_path), "ws-a")
    monkeypatch.setenv("EDGEPAIR_UNSAFE_BREAK", "fence")  # read once, at start: a later change is not seen
    assert node.unsafe_break == frozenset(health)
    assert node.health["unsafe_break"] == health
    warnings = [m for m in caplog.messages if "UNSAFE" in m]
    assert warnings == (
        [
            "node ws-a: UNSAFE: test-only break drop-window,fence active (EDGEPAIR_UNSAFE_BREAK): for tests of the"
            " drills only, never in production"
        ]
        if health
        else []
    )


def test_the_node_refuses_an_unknown_break(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPAIR_UNSAFE_BREAK", "fences")
    with pytest.raises(ConfigError) as err:
        Node(parse_config(NODE_CONFIG, base_dir=tmp_path), "ws-a")
    assert str(err.value).startswith("EDGEPAIR_UNSAFE_BREAK='fences': unknown value 'fences'; allowed values:")


def test_the_clock_jump_hook_offsets_the_wall_clock_only(tmp_path: Path) -> None:
    """``install_clock_offset`` (in a fresh interpreter: it patches the process's ``time`` module for good): the wall
    clock reads the file's offset, the monotonic clock does not move; an unreadable file reads as 0."""
    import subprocess
    import sys

    offset = tmp_path / "offset"
    offset.write_text("300\n")
    code = (
        "import time; from pathlib import Path; from cluster.unsafe import install_clock_offset\n"
        "w0, m0 = time.time(), time.monotonic()\n"
        f"install_clock_offset(Path({str(offset)!r}))\n"
        "print(round(time.time() - w0), round(time.monotonic() - m0), round(time.time_ns() / 1e9 - w0))\n"
        f"Path({str(offset)!r}).write_text('not a number'); time.sleep(0.15)\n"
        "print(round(time.time() - w0))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["300 0 300", "0"]


def test_the_clock_jump_hook_is_inert_without_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from cluster import unsafe

    monkeypatch.delenv(unsafe.CLOCK_FILE_ENV, raising=False)
    before = time.time
    unsafe.install_clock_offset_from_env()  # Ray's worker setup hook in a node without the clock-jump hook
    assert time.time is before
    assert unsafe.test_faults({"EDGEPAIR_TEST_FAULTS": "clock-jump"}) == frozenset({"clock-jump"})
    assert unsafe.test_faults({}) == frozenset()
