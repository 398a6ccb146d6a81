"""The node's runner of camera actors (``cluster.camera_runner.RayCameraRunner``) on a fake clock: its fence rules.

The real runner, with its Ray edge replaced (``ray_api`` and ``start_actor``): an actor handle records every
``method.remote(...)`` call, and may pass them on to a real ``CameraWorker`` to show where a deadline lands.

The rules, as ``RayCameraRunner`` implements them: the deadline is ``at + 0.8 x ttl`` of the latest renewal sent at
``at``, ``-inf`` before the first, never moved back by an older renewal, pushed to every running actor at each
renewal (not to standby ones); a camera is started, activated or retokened only while ``clock() < deadline``, and is
handed the deadline when it starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from actors.worker import CameraWorker
from cluster.camera_runner import RayCameraRunner
from cluster.config import Config, parse_config

TTL = 2.0  # fence window 0.8 x 2 = 1.6 s

CONFIG = """
store: {id: s1, timezone: UTC}
security: {tls: false}
cameras:
  - {id: cam-1, source: clip.mp4}
  - {id: cam-2, source: clip.mp4, fps: 5}
"""


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Handle:
    """A Ray actor handle: ``handle.name.remote(*args)`` is recorded in ``calls`` and, with a ``target``, run on it
    (``renew``, ``retoken`` and ``activate`` only); otherwise it returns what a camera actor would."""

    FORWARDED = ("renew", "retoken", "activate")

    def __init__(self, serial: int, target: CameraWorker | None = None) -> None:
        self.serial = serial
        self.target = target
        self.calls: list[tuple[Any, ...]] = []
        self.status_doc: dict[str, Any] = {"active": True, "token": 0}

    def __getattr__(self, name: str) -> Any:
        handle = self

        class Method:
            def remote(self, *args: Any) -> Any:
                handle.calls.append((name, *args))
                if handle.target is not None and name in Handle.FORWARDED:
                    return getattr(handle.target, name)(*args)
                results = {
                    "stop": {"frames": 7, "segments": 2},
                    "drain_written": ("i", []),
                    "status": handle.status_doc,
                }
                return results.get(name)

        return Method()


class FakeRay:
    """``ray.get`` on a recorded call returns its result; ``ray.kill`` is recorded."""

    def __init__(self) -> None:
        self.killed: list[int] = []

    def get(self, ref: Any, timeout: float | None = None) -> Any:
        return ref

    def kill(self, actor: Handle, no_restart: bool = False) -> None:
        assert no_restart is True
        self.killed.append(actor.serial)


class Factory:
    """Stands in for ``actors.ray_actors.start_camera``: records its arguments, returns a new handle."""

    def __init__(self, worker_of: Any = None) -> None:
        self.made: list[tuple[str, dict[str, Any]]] = []
        self.handles: list[Handle] = []
        self.worker_of = worker_of

    def __call__(self, config: Config, camera_id: str, inference: Any, **kwargs: Any) -> Handle:
        self.made.append((camera_id, {k: kwargs[k] for k in ("token", "fps", "fence_deadline", "autostart")}))
        target = self.worker_of(config, camera_id, kwargs) if self.worker_of is not None else None
        handle = Handle(len(self.handles), target)
        self.handles.append(handle)
        return handle


def make_runner(
    tmp_path: Path,
    clock: FakeClock,
    factory: Factory,
    ray: FakeRay | None = None,
    *,
    unsafe_break: frozenset[str] = frozenset(),
    cluster: Any = lambda: None,
) -> RayCameraRunner:
    return RayCameraRunner(
        parse_config(CONFIG, base_dir=tmp_path),
        "inference",
        "m-1",
        TTL,
        clock=clock,
        unsafe_break=unsafe_break,
        cluster=cluster,
        ray_api=ray or FakeRay(),
        start_actor=factory,
    )


def test_nothing_starts_before_the_first_renewal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    factory = Factory()
    runner = make_runner(tmp_path, FakeClock(-1e12), factory)
    assert runner.deadline == float("-inf")
    with caplog.at_level(logging.WARNING, logger="cluster.node"):
        runner.start_camera("cam-1", 10.0, 5)
    assert runner.running() == set()
    assert factory.made == []
    assert caplog.messages == ["node ws-a: not starting cam-1: fenced"]


def test_a_renewal_sets_the_deadline_and_pushes_it_to_running_actors_only(tmp_path: Path) -> None:
    clock, factory = FakeClock(100.0), Factory()
    runner = make_runner(tmp_path, clock, factory)
    runner.renewed(100.0)
    assert runner.deadline == 101.6
    runner.start_camera("cam-1", 10.0, 5)
    runner.prepare_standby()  # an idle actor for cam-2
    assert factory.made == [
        ("cam-1", {"token": 5, "fps": 10.0, "fence_deadline": 101.6, "autostart": True}),
        ("cam-2", {"token": 0, "fps": None, "fence_deadline": None, "autostart": False}),
    ]
    runner.renewed(100.5)
    runner.renewed(99.0)  # an older renewal (sent earlier, seen later) never moves the deadline back
    assert runner.deadline == 102.1
    running, standby = factory.handles
    assert running.calls == [("renew", 102.1, float("-inf")), ("renew", 102.1, float("-inf"))]
    assert standby.calls == []


@pytest.mark.parametrize(("now", "started"), [(101.6 - 1e-9, True), (101.6, False), (150.0, False)])
def test_a_camera_starts_only_before_the_deadline(tmp_path: Path, now: float, started: bool) -> None:
    clock, factory = FakeClock(100.0), Factory()
    runner = make_runner(tmp_path, clock, factory)
    runner.renewed(100.0)
    clock.now = now
    runner.start_camera("cam-2", 10.0, 5)
    assert runner.running() == ({"cam-2"} if started else set())
    made = [("cam-2", {"token": 5, "fps": 5.0, "fence_deadline": 101.6, "autostart": True})]
    assert factory.made == (made if started else [])


def test_a_fenced_runner_neither_retokens_nor_activates(tmp_path: Path) -> None:
    clock, factory = FakeClock(100.0), Factory()
    runner = make_runner(tmp_path, clock, factory)
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)
    runner.prepare_standby()
    clock.now = 101.6
    runner.start_camera("cam-1", 10.0, 6)  # a new leader kept it here: not while fenced
    runner.start_camera("cam-2", 5.0, 6)  # a takeover with a standby actor: not while fenced
    assert runner.actors["cam-1"][1:] == (10.0, 5)
    assert [h.calls for h in factory.handles] == [[], []]
    assert runner.running() == {"cam-1"}
    runner.renewed(100.5)  # renewed again: both go ahead
    runner.start_camera("cam-1", 10.0, 6)
    runner.start_camera("cam-2", 5.0, 6)
    assert [h.calls for h in factory.handles] == [
        [("renew", 102.1, float("-inf")), ("retoken", 6)],
        [("activate", 6, 5.0, 102.1, frozenset())],
    ]
    assert runner.running() == {"cam-1", "cam-2"}


def test_a_stalled_clock_keeps_a_future_deadline_valid_and_a_past_one_fenced(tmp_path: Path) -> None:
    clock, factory = FakeClock(100.0), Factory()
    ahead = make_runner(tmp_path, clock, factory)
    ahead.renewed(99.0)  # deadline 100.6, the clock stays at 100.0
    behind = make_runner(tmp_path, clock, Factory())
    behind.renewed(98.3)  # deadline 99.9
    behind.renewed(98.0)
    for token in range(1, 50):
        ahead.start_camera("cam-1", 10.0, token)
        behind.start_camera("cam-1", 10.0, token)
    assert clock.now == 100.0
    assert (ahead.running(), ahead.actors["cam-1"][2]) == ({"cam-1"}, 49)
    assert (behind.running(), behind.deadline) == (set(), 98.3 + 1.6)


def test_the_worker_pauses_at_the_deadline_the_runner_pushed(tmp_path: Path) -> None:
    """Runner and real worker together: the worker's fence falls exactly at the runner's latest deadline."""
    clock = FakeClock(100.0)

    def worker_of(config: Config, camera_id: str, kwargs: dict[str, Any]) -> CameraWorker:
        w = CameraWorker(
            config,
            camera_id,
            lambda frame: None,
            lambda ref: ref,
            token=kwargs["token"],
            model_version="m-1",
            fence_deadline=kwargs["fence_deadline"],
            autostart=False,
            clock=clock,
        )
        w.start = lambda: True  # type: ignore[method-assign]  # no loop: only its fence is looked at
        return w

    factory = Factory(worker_of)
    runner = make_runner(tmp_path, clock, factory)
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)
    runner.prepare_standby()
    worker = factory.handles[0].target
    idle = factory.handles[1].target
    assert worker is not None and idle is not None
    clock.now = 101.5
    runner.renewed(100.2)
    assert (worker.fence_deadline, idle.fence_deadline) == (101.8, None)
    clock.now = 101.8 - 1e-9
    assert worker._fence_expired() is False
    clock.now = 101.8
    assert worker._fence_expired() is True
    runner.renewed(101.0)
    assert (worker.fence_deadline, worker._fence_expired()) == (102.6, False)
    runner.start_camera("cam-2", 5.0, 5)  # the standby worker is activated under the runner's deadline
    assert (idle.token, idle.fence_deadline, idle.capture.target_fps) == (5, 102.6, 5.0)


def test_stop_drains_kills_and_replaces_with_a_standby(tmp_path: Path) -> None:
    clock, factory, ray = FakeClock(100.0), Factory(), FakeRay()
    runner = make_runner(tmp_path, clock, factory, ray)
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)
    runner.stop_camera("cam-1")
    assert runner.running() == set()
    assert factory.handles[0].calls == [("stop",), ("drain_written", "", 0)]
    assert ray.killed == [0]
    assert sorted(runner.standby) == ["cam-1", "cam-2"]


class TimingOutRay(FakeRay):
    """``ray.get`` of a drain_written call raises (a timeout) the first ``fail`` times; the actor answers from a list
    it keeps until acknowledged, as CameraWorker.drain_written does."""

    def __init__(self, fail: int) -> None:
        super().__init__()
        self.fail = fail

    def get(self, ref: Any, timeout: float | None = None) -> Any:
        if isinstance(ref, tuple) and ref and ref[0] == "drain" and self.fail > 0:
            self.fail -= 1
            raise TimeoutError("GetTimeoutError: the actor did not answer in time")
        return ref[1] if isinstance(ref, tuple) and ref and ref[0] == "drain" else ref


def test_a_drain_reply_that_times_out_loses_no_segment_and_none_comes_twice(tmp_path: Path) -> None:
    from actors.worker import CameraWorker

    clock, factory, ray = FakeClock(100.0), Factory(), TimingOutRay(fail=2)
    runner = make_runner(tmp_path, clock, factory, ray)
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)
    kept: list[tuple[int, str, str, str, float]] = [(n, f"seg-{n}", f"/d/seg-{n}", "sha", 100.0) for n in (1, 2)]
    actor = factory.handles[0]

    class Drain:
        def remote(self, instance: str, acked: int) -> Any:
            nonlocal kept
            worker = CameraWorker.__new__(CameraWorker)  # the real method on the actor's state
            worker._instance, worker._written = "inst-1", kept
            reply = worker.drain_written(instance, acked)
            kept = worker._written
            return ("drain", reply)

    actor.drain_written = Drain()  # type: ignore[attr-defined]
    assert runner.drain_written() == []  # timed out: nothing handed over, nothing lost
    assert runner.drain_written() == []  # again
    assert [s for s, *_ in runner.drain_written()] == ["seg-1", "seg-2"]
    kept.append((3, "seg-3", "/d/seg-3", "sha", 101.0))
    assert [s for s, *_ in runner.drain_written()] == ["seg-3"]  # 1 and 2 acknowledged: dropped, not sent again
    assert runner.drain_written() == [] and [n for n, *_ in kept] == []


def test_the_runner_hands_each_segment_over_once_and_starts_afresh_with_a_restarted_actor(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, FakeClock(100.0), Factory(), FakeRay())

    def entries(*ns: int) -> list[tuple[int, str, str, str, float]]:
        return [(n, f"seg-{n}", f"/d/seg-{n}", "sha", 100.0) for n in ns]

    assert [s for s, *_ in runner._received("cam-1", "inst-1", entries(1, 2))] == ["seg-1", "seg-2"]
    assert runner._ack("cam-1") == ("inst-1", 2)
    # a second call in flight (the push loop's and the stop's) returns the same entries: not handed over again
    assert [s for s, *_ in runner._received("cam-1", "inst-1", entries(1, 2, 3))] == ["seg-3"]
    # Ray restarted the actor: a new instance numbering from 1 again; its segments are all new
    assert [s for s, *_ in runner._received("cam-1", "inst-2", entries(1))] == ["seg-1"]
    assert runner._ack("cam-1") == ("inst-2", 1)


def test_an_actor_ray_restarted_comes_back_at_the_planned_rate(tmp_path: Path) -> None:
    """Ray restarts a dead camera actor from its constructor's arguments (idle, or with its old token): the runner
    activates it again under the current token, fence and *planned* rate. For a camera without an ``fps`` of its own
    the rate was lost (None: the source's full rate) where the start and the activation of a standby kept it."""
    clock, factory = FakeClock(100.0), Factory()
    runner = make_runner(tmp_path, clock, factory)
    runner.renewed(100.0)
    runner.start_camera("cam-1", 4.0, 5)
    runner.prepare_standby()
    runner.start_camera("cam-2", 3.0, 5)  # activates the standby actor
    first, standby = factory.handles
    assert ("activate", 5, 3.0, 101.6, frozenset()) in standby.calls
    first.status_doc = {"active": False, "token": 0}  # what Ray's restart of the actor answers
    runner.statuses()
    assert first.calls[-1] == ("activate", 5, 4.0, 101.6, frozenset())
    assert factory.made[0] == ("cam-1", {"token": 5, "fps": 4.0, "fence_deadline": 101.6, "autostart": True})
    assert [runner.effective_fps(c, f) for c, f in [("cam-1", 4.0), ("cam-1", None), ("cam-2", 3.0)]] == [
        4.0,
        None,
        3.0,
    ]


class DiskFullActor(Handle):
    """A camera actor whose disk refused its last flush: 25 frames pending at the stop, until ``disk_ok``; then
    ``write_kept`` writes them (3 segments, handed over by ``drain_written`` until acknowledged)."""

    def __init__(self, serial: int) -> None:
        super().__init__(serial)
        self.disk_ok = False
        self.instance = "kept-1"
        self.written: list[tuple[int, str, str, str, float]] = []

    def __getattr__(self, name: str) -> Any:
        actor = self

        class Method:
            def remote(self, *args: Any) -> Any:
                actor.calls.append((name, *args))
                pending = {"frames": 25, "frames_written": 0, "frames_pending": 25}
                if name == "stop":
                    return pending
                if name == "write_kept":
                    if not actor.disk_ok:
                        return pending
                    if not actor.written:
                        actor.written = [(n, f"seg-{n}", f"/d/seg-{n}", "sha", 100.0) for n in (1, 2, 3)]
                    return {"frames": 25, "frames_written": 25, "frames_pending": 0}
                if name == "drain_written":
                    instance, acked = args
                    actor.written = [e for e in actor.written if instance != actor.instance or e[0] > acked]
                    return (actor.instance, list(actor.written))
                return None

        return Method()


def test_a_camera_stopped_with_windows_its_disk_refused_keeps_its_actor_until_they_are_written(
    tmp_path: Path,
) -> None:
    """Killing the actor would lose the windows only its memory holds: the runner keeps it, tries again at every
    push, hands the segments it then writes to the replicator once, and kills it when nothing is left."""
    clock, ray = FakeClock(100.0), FakeRay()
    factory = Factory()
    factory.handles.append(DiskFullActor(0))  # the first actor the runner starts is this one
    made = factory.__call__

    def start(config: Config, camera_id: str, inference: Any, **kwargs: Any) -> Handle:
        if not factory.made:
            factory.made.append((camera_id, {}))
            return factory.handles[0]
        return made(config, camera_id, inference, **kwargs)

    runner = make_runner(tmp_path, clock, start, ray)  # type: ignore[arg-type]
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)
    actor = factory.handles[0]
    assert isinstance(actor, DiskFullActor)
    runner.stop_camera("cam-1")
    assert (runner.running(), ray.killed, runner.kept_frames()) == (set(), [], {"cam-1": 25})
    assert sorted(runner.standby) == ["cam-1", "cam-2"]  # the camera can start again here meanwhile
    assert runner.drain_written() == []  # the disk still refuses: kept, not killed
    assert (ray.killed, runner.kept_frames()) == ([], {"cam-1": 25})
    actor.disk_ok = True
    assert [s for s, *_ in runner.drain_written()] == ["seg-1", "seg-2", "seg-3"]
    assert (ray.killed, runner.kept_frames(), runner.kept_lost) == ([0], {}, 0)
    assert runner.drain_written() == []  # each segment once


def test_a_kept_actor_that_ray_restarted_counts_its_windows_as_lost(tmp_path: Path) -> None:
    """An actor restarted by Ray comes back empty: its windows are gone. The runner says so (``kept_lost``) instead of
    taking its empty status for windows written, and lets it go."""
    ray = FakeRay()
    factory = Factory()
    factory.handles.append(DiskFullActor(0))

    def start(config: Config, camera_id: str, inference: Any, **kwargs: Any) -> Handle:
        factory.made.append((camera_id, {}))
        return factory.handles[0] if len(factory.made) == 1 else Handle(len(factory.made))

    runner = make_runner(tmp_path, FakeClock(100.0), start, ray)  # type: ignore[arg-type]
    runner.renewed(100.0)
    runner.start_camera("cam-1", 10.0, 5)
    actor = factory.handles[0]
    assert isinstance(actor, DiskFullActor)
    runner.stop_camera("cam-1")
    actor.instance, actor.disk_ok = "restarted-2", True  # Ray restarted it: a new process, nothing pending
    assert runner.drain_written() == []
    assert (ray.killed, runner.kept_frames(), runner.kept_lost) == ([0], {}, 25)
