"""The camera worker's own fence (``actors.worker.CameraWorker``) on a fake clock: when it pauses, what it writes.

The real worker runs its real loop (in the test's thread) with three fakes at its edges: the clock, the capture (a
script of frames, each handed over at a given clock time) and the inference server (a frame's inference ends at a
given clock time). What it processed is read back from what it wrote: the segment files, their token, frame count
and first and last frame in their metadata.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors.capture import CaptureStats, FrameMeta
from actors.detections import Detections
from actors.worker import RESULT_WAIT_S, STOP_DRAIN_S, CameraWorker
from cluster.config import Config, parse_config
from storage.schema import read_segment_meta

T0 = 1_700_000_000.0  # frame time of the first frame: a whole multiple of 20 s (see cluster.unsafe's drop-window)
D = 100.5  # the fence deadline of most tests, on the fake clock
TOKEN = 3

CONFIG = """
store: {id: s1, timezone: UTC}
security: {tls: false}
runtime: {inflight: %d}
cameras:
  - id: cam-1
    source: clip.mp4
    playback: fast
"""


def ts(tenths: int) -> float:
    """The capture timestamp ``tenths`` tenths of a second after T0."""
    return T0 + tenths / 10


class FakeClock:
    """A monotonic clock that moves only when told to (never backwards)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance_to(self, t: float) -> None:
        self.now = max(self.now, t)


@dataclass(frozen=True)
class Frame:
    """A frame with capture time ``ts``, handed over when the clock reads ``at``; its inference returns at ``done``
    (None: at once)."""

    ts: float
    at: float
    done: float | None = None


@dataclass(frozen=True)
class Do:
    """A step of the script that is not a frame: ``action`` runs, and the capture has no frame this time."""

    action: Callable[[], object]


class ScriptedCapture:
    """Stands in for ``actors.capture.Capture``: each ``next()`` plays the next step of the script; once the script
    is played it stops the worker (as the node's runner does) and has no more frames."""

    def __init__(self, worker: CameraWorker, clock: FakeClock, steps: Iterable[Frame | Do]) -> None:
        self.worker = worker
        self.clock = clock
        self.steps = deque(steps)
        self.stats = CaptureStats()
        self.target_fps: float | None = None
        self.handed: list[float] = []  # ts of every frame handed over
        self._frames: dict[int, Frame] = {}
        self._keep: list[np.ndarray] = []

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def next(self, timeout: float = 1.0) -> tuple[np.ndarray, FrameMeta] | str | None:
        if not self.steps:
            self.worker.stop(timeout=0)  # signal only: the loop ends in this thread once this returns
            return None
        step = self.steps.popleft()
        if isinstance(step, Do):
            step.action()
            return None
        self.clock.advance_to(step.at)
        image = np.zeros((4, 4, 3), np.uint8)
        self._keep.append(image)
        self._frames[id(image)] = step
        self.handed.append(step.ts)
        return image, FrameMeta("cam-1", len(self.handed) - 1, len(self.handed) - 1, step.ts, 640, 480)

    # the inference server's side
    def submit(self, image: np.ndarray) -> Frame:
        return self._frames[id(image)]

    def resolve(self, ref: Any) -> Detections:
        assert isinstance(ref, Frame)
        if ref.done is not None:
            self.clock.advance_to(ref.done)
        return Detections.empty()


def make_config(tmp_path: Path, inflight: int = 1) -> Config:
    return parse_config(CONFIG % inflight, base_dir=tmp_path)


def make_worker(
    tmp_path: Path,
    clock: FakeClock,
    *,
    deadline: float | None = D,
    token: int = TOKEN,
    inflight: int = 1,
    unsafe_break: frozenset[str] = frozenset(),
) -> CameraWorker:
    holder: list[ScriptedCapture] = []
    worker = CameraWorker(
        make_config(tmp_path, inflight),
        "cam-1",
        lambda image: holder[0].submit(image),
        lambda ref: holder[0].resolve(ref),
        token=token,
        model_version="m-1",
        fence_deadline=deadline,
        autostart=False,
        clock=clock,
        unsafe_break=unsafe_break,
    )
    capture = ScriptedCapture(worker, clock, [])
    holder.append(capture)
    worker.capture = capture  # type: ignore[assignment]
    return worker


def play(worker: CameraWorker, steps: Iterable[Frame | Do]) -> None:
    """Run the worker's loop over ``steps`` in this thread, to its end (stop, final flush)."""
    capture = worker.capture
    assert isinstance(capture, ScriptedCapture)
    capture.steps.extend(steps)
    worker._run()
    assert worker.error == ""


Seg = tuple[str, float, float, int, int, float, float]


def segments(tmp_path: Path) -> list[Seg]:
    """(segment id, window start, window end, token, frames, first frame, last frame) of every file written."""
    metas = [read_segment_meta(p) for p in (tmp_path / "data").rglob("*.parquet")]
    return sorted(
        (m.segment_id, m.window_start, m.window_end, m.token, m.frames, m.first_frame, m.last_frame) for m in metas
    )


def seg(second: int, token: int, frames: int, first: float, last: float) -> Seg:
    """The segment expected for the window ``second`` s after T0."""
    start = T0 + second
    return (f"cam-1.{int(start * 1000)}.ws-a.{token}", start, start + 1, token, frames, first, last)


# --- the deadline ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "done", "processed"),
    [
        (100.45, 100.499, 5),  # inference ends just before the deadline: processed
        (100.45, D, 4),  # the deadline passes while the frame is in inference: not processed
        (100.45, 100.7, 4),
        (D, None, 4),  # handed over at the deadline: not processed
    ],
)
def test_no_frame_is_processed_at_or_after_the_deadline(
    tmp_path: Path, at: float, done: float | None, processed: int
) -> None:
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock)
    play(
        worker,
        [Frame(ts(k), 100.0 + k / 10) for k in range(4)] + [Frame(ts(4), at, done), Frame(ts(6), 100.6)],
    )
    assert worker.frames == processed
    assert worker.last_ts == ts(processed - 1)
    assert worker.fenced is True
    assert worker.status()["state"] == "fenced"
    assert segments(tmp_path) == [seg(0, TOKEN, processed, ts(0), ts(processed - 1))]


def test_frames_in_flight_when_the_fence_falls_are_dropped(tmp_path: Path) -> None:
    """Three frames ahead in inference: the one whose inference ends at the deadline and the two behind it are
    dropped, and never processed after the renewal."""
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, inflight=3)
    play(
        worker,
        [
            Frame(ts(0), 100.0),
            Frame(ts(9), 100.1, done=D),
            Frame(ts(10), 100.2),
            Frame(ts(11), 100.3),  # handed over once ts(0) is processed
            Do(lambda: worker.renew(102.0)),
            Frame(ts(12), 100.8),
            Frame(ts(13), 100.9),
        ],
    )
    capture = worker.capture
    assert isinstance(capture, ScriptedCapture)
    assert capture.handed == [ts(0), ts(9), ts(10), ts(11), ts(12), ts(13)]
    assert worker.frames == 3
    assert segments(tmp_path) == [seg(0, TOKEN, 1, ts(0), ts(0)), seg(1, TOKEN, 2, ts(12), ts(13))]


def test_renewal_after_expiry_resumes_and_frames_of_the_fenced_time_are_never_processed(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock)
    during: list[tuple[bool, list[Seg]]] = []
    play(
        worker,
        [
            Frame(ts(0), 100.0),
            Frame(ts(1), 100.1),
            Frame(ts(2), D),  # at the deadline: dropped
            Frame(ts(3), 100.6),  # while fenced: drained, not processed
            Frame(ts(4), 100.7),
            Do(lambda: during.append((worker.fenced, segments(tmp_path)))),  # written when the fence fell
            Do(lambda: worker.renew(101.5)),
            Frame(ts(12), 100.8),
            Frame(ts(13), 100.9),
        ],
    )
    assert during == [(True, [seg(0, TOKEN, 2, ts(0), ts(1))])]
    assert worker.fenced is False
    assert worker.fence_deadline == 101.5
    assert worker.frames == 4
    assert segments(tmp_path) == [seg(0, TOKEN, 2, ts(0), ts(1)), seg(1, TOKEN, 2, ts(12), ts(13))]


def test_a_renewal_within_the_window_the_fence_closed_resumes_at_the_next_window(tmp_path: Path) -> None:
    """The fence wrote the open window; frames of that window after the renewal are not processed (the segment is
    written already and cannot change), the next window is written whole."""
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock)
    play(
        worker,
        [
            Frame(ts(0), 100.0),
            Frame(ts(1), D),
            Do(lambda: worker.renew(101.5)),
            Frame(ts(2), 100.6),  # window T0 is written: not processed
            Frame(ts(9), 100.7),  # nor this one
            Frame(ts(10), 100.8),
            Frame(ts(11), 100.9),
        ],
    )
    assert worker.frames == 3
    assert segments(tmp_path) == [seg(0, TOKEN, 1, ts(0), ts(0)), seg(1, TOKEN, 2, ts(10), ts(11))]


def test_renew_never_moves_the_deadline_back_and_leaves_an_unfenced_worker_unfenced(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    fenced = make_worker(tmp_path / "a", clock)
    seen = []
    for d in (101.0, 103.25, 100.2, 103.0):
        assert fenced.renew(d) is True
        seen.append(fenced.fence_deadline)
    assert seen == [101.0, 103.25, 103.25, 103.25]
    free = make_worker(tmp_path / "b", clock, deadline=None)
    free.renew(101.0)
    assert free.fence_deadline is None
    clock.advance_to(1e9)
    assert (fenced._fence_expired(), free._fence_expired()) == (True, False)


def test_activate_hands_a_standby_worker_its_token_rate_and_deadline(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, deadline=None, token=0)
    worker.start = lambda: True  # type: ignore[method-assign]  # the loop is not started here
    assert worker.activate(9, 5.0, 100.4) is True
    assert (worker.token, worker.capture.target_fps, worker.fence_deadline) == (9, 5.0, 100.4)
    clock.advance_to(100.4)
    assert worker._fence_expired() is True


# --- a stalled clock ---------------------------------------------------------------------------------------------


def test_a_stalled_clock_never_expires_a_deadline_ahead_of_it(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, deadline=100.000001)
    play(worker, [Frame(ts(k), 100.0, done=100.0) for k in range(30)])
    assert clock.now == 100.0
    assert worker.frames == 30
    assert worker.fenced is False
    assert segments(tmp_path) == [seg(s, TOKEN, 10, ts(10 * s), ts(10 * s + 9)) for s in range(3)]


@pytest.mark.parametrize("deadline", [99.0, 100.0])
def test_a_stalled_clock_never_unfences_a_deadline_behind_it(tmp_path: Path, deadline: float) -> None:
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, deadline=deadline)
    steps: list[Frame | Do] = []
    for k in range(20):
        steps.append(Frame(ts(k), 100.0))
        if k % 5 == 0:
            steps.append(Do(lambda: worker.renew(99.5)))
            steps.append(Do(lambda: worker.renew(100.0)))
    play(worker, steps)
    assert clock.now == 100.0
    assert worker.fence_deadline == 100.0
    assert worker.frames == 0
    assert worker.fenced is True
    assert segments(tmp_path) == []


# --- a new token -------------------------------------------------------------------------------------------------


def test_a_token_change_mid_window_applies_from_the_next_window(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, deadline=1000.0, token=5)
    play(
        worker,
        [
            Frame(ts(0), 100.0),
            Frame(ts(5), 100.1),
            Do(lambda: worker.retoken(7)),
            Frame(ts(8), 100.2),
            Frame(ts(12), 100.3),
            Do(lambda: worker.retoken(9)),
            Do(lambda: worker.retoken(4)),  # an older token is ignored
            Frame(ts(15), 100.4),
            Frame(ts(21), 100.5),
        ],
    )
    assert worker.token == 9
    assert segments(tmp_path) == [
        seg(0, 5, 3, ts(0), ts(8)),
        seg(1, 7, 2, ts(12), ts(15)),
        seg(2, 9, 1, ts(21), ts(21)),
    ]


# --- open visits when the fence pauses the worker ------------------------------------------------------------------


def test_open_visits_end_in_the_window_the_fence_writes_and_a_later_stop_loses_nothing(tmp_path: Path) -> None:
    """A fenced worker that is then stopped (the node hands its camera over) used to end its open visits at the
    stop, in the window the fence had already written: the writer refused that second version and the exits were
    lost. They now end when the fence pauses the worker, in the window it writes then."""
    from actors.events import Event

    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock)
    finished: list[float] = []
    real_finish = worker.analytics.finish

    def finish(ts_: float) -> list[Event]:
        finished.append(ts_)
        real_finish(ts_)
        exits = [Event(ts=ts_, camera_id="cam-1", track_id=7, kind="zone_exit", zone_id="z", dwell_s=1.5)]
        return exits if len(finished) == 1 else []  # one visit open: closed once

    worker.analytics.finish = finish  # type: ignore[method-assign]
    play(worker, [Frame(ts(k), 100.0 + k / 10) for k in range(4)] + [Frame(ts(6), 100.6), Frame(ts(7), 100.7)])
    assert worker.error == ""
    assert finished == [ts(3), ts(3)]  # at the pause (the visit closed), and at the stop (nothing left open)
    assert segments(tmp_path) == [seg(0, TOKEN, 4, ts(0), ts(3))]
    import pyarrow.parquet as pq

    (path,) = (tmp_path / "data").rglob("*.parquet")
    rows = pq.read_table(path).to_pylist()
    assert [(r["kind"], r["track_id"], r["ts"].timestamp()) for r in rows] == [("zone_exit", 7, ts(3))]
    st = worker.status()
    assert (st["frames"], st["frames_written"], st["frames_pending"]) == (4, 4, 0)


# --- handing written segments to the node --------------------------------------------------------------------------


def test_written_segments_stay_until_the_node_acknowledges_them(tmp_path: Path) -> None:
    """A drain_written reply the node never got (a call that timed out on a busy or unfrozen actor) is not lost: the
    next call, carrying the old acknowledgement, returns the same segments; an acknowledged one is never returned
    again; another actor's acknowledgement (Ray restarted it) drops nothing."""
    worker = make_worker(tmp_path, FakeClock(100.0), deadline=None)
    play(worker, [Frame(ts(k), 100.0 + k / 10) for k in range(25)])  # windows 0, 1, 2
    ids = [s[0] for s in segments(tmp_path)]
    assert len(ids) == 3
    instance, first = worker.drain_written()
    assert [(n, sid) for n, sid, *_ in first] == [(1, ids[0]), (2, ids[1]), (3, ids[2])]
    # the reply was lost: the node asks again with what it had (nothing)
    assert worker.drain_written()[1] == first
    # another instance's acknowledgement drops nothing
    assert worker.drain_written("another-actor", 3)[1] == first
    # the node got the first two: they are dropped, the third comes again
    assert [n for n, *_ in worker.drain_written(instance, 2)[1]] == [3]
    assert worker.drain_written(instance, 3) == (instance, [])


def test_a_stop_after_a_stalled_source_closed_the_window_writes_the_closing_events_in_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live source that stalls has its open window closed by the wall clock (``_flush_idle``); when the node then
    stops the camera (it moves away: its source fails from here), the events that end the open visits carry the
    last frame's time, inside that closed window. They used to reopen it: the writer refused the second version
    (found by the camera-cut drill) and they were lost. They now go to the next window."""
    import pyarrow.parquet as pq

    from actors import worker as worker_mod
    from actors.events import Event

    wall = [T0]
    monkeypatch.setattr(worker_mod.time, "time", lambda: wall[0])
    clock = FakeClock(100.0)
    holder: list[ScriptedCapture] = []
    config = parse_config((CONFIG % 1).replace("playback: fast", "playback: realtime"), base_dir=tmp_path)
    worker = CameraWorker(
        config, "cam-1", lambda image: holder[0].submit(image), lambda ref: holder[0].resolve(ref),
        token=TOKEN, model_version="m-1", fence_deadline=None, autostart=False, clock=clock,
    )  # fmt: skip
    capture = ScriptedCapture(worker, clock, [])
    holder.append(capture)
    worker.capture = capture  # type: ignore[assignment]
    real_finish = worker.analytics.finish

    def finish(ts_: float) -> list[Event]:
        real_finish(ts_)
        return [Event(ts=ts_, camera_id="cam-1", track_id=7, kind="zone_exit", zone_id="z", dwell_s=1.5)]

    worker.analytics.finish = finish  # type: ignore[method-assign]

    def stall() -> None:
        wall[0] = T0 + 2.5  # the wall clock passes the open window by more than a window: it is closed

    play(worker, [Frame(ts(k), 100.0 + k / 10) for k in range(4)] + [Do(stall), Do(lambda: None)])
    assert worker.error == ""
    assert segments(tmp_path) == [seg(0, TOKEN, 4, ts(0), ts(3)), seg(1, TOKEN, 0, 0.0, 0.0)]
    rows = {
        read_segment_meta(p).window_start: pq.read_table(p).to_pylist() for p in (tmp_path / "data").rglob("*.parquet")
    }
    assert rows[T0] == []
    assert [(r["kind"], r["track_id"], r["ts"].timestamp()) for r in rows[T0 + 1]] == [("zone_exit", 7, ts(3))]


def test_a_wall_clock_step_pauses_the_worker_until_the_clock_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a fence, frames stamped after the wall clock stepped by more than the bound (5 s) are not processed:
    the window open then is written with the frames before the step, nothing is written at the stepped time (it
    would collide with what the camera's producer of that time writes), and processing resumes once the clock is
    back. The step is the wall clock's reading against the machine's monotonic clock (the fence's clock here is a
    fake one that jumps; the frames' own times are the script's)."""
    from actors import worker as worker_mod

    real = worker_mod.time.time
    offset = [0.0]
    monkeypatch.setattr(worker_mod.time, "time", lambda: real() + offset[0])
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, deadline=1e9)
    states: list[str] = []

    def step(by: float) -> Do:
        return Do(lambda: offset.__setitem__(0, by))

    def look() -> Do:
        return Do(lambda: states.append(worker.status()["state"]))

    play(
        worker,
        [Frame(ts(k), 100.0 + k / 10) for k in range(3)]
        + [step(300.0), Frame(ts(3) + 300, 100.3), Frame(ts(4) + 300, 100.4), look()]
        + [step(0.0), Frame(ts(15), 101.5), Frame(ts(16), 101.6), look()],
    )
    assert states == ["clock-stepped", "starting"]  # then the capture's own state (the script's never changes)
    assert segments(tmp_path) == [seg(0, TOKEN, 3, ts(0), ts(2)), seg(1, TOKEN, 2, ts(15), ts(16))]
    assert worker.status()["frames"] == 5


@pytest.mark.parametrize(
    ("by", "deadline", "processed"),
    [
        (-300.0, 1e9, 3),  # a step back pauses too
        (3.0, 1e9, 5),  # within the bound (5 s): no pause
        (300.0, None, 5),  # no fence (`edgepair run`, one node): no peer to tell the right clock, no pause
    ],
)
def test_which_steps_pause_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by: float, deadline: float | None, processed: int
) -> None:
    from actors import worker as worker_mod

    real = worker_mod.time.time
    offset = [0.0]
    monkeypatch.setattr(worker_mod.time, "time", lambda: real() + offset[0])
    worker = make_worker(tmp_path, FakeClock(100.0), deadline=deadline)
    # Frame times ahead of the ones before (a step back is the clock's, not the frames'): only the pause drops them.
    play(worker, [Frame(ts(k), 100.0 + k / 10) for k in range(3)] + [Do(lambda: offset.__setitem__(0, by))]
         + [Frame(ts(3), 100.3), Frame(ts(4), 100.4)])  # fmt: skip
    assert worker.status()["frames"] == processed


def test_a_step_the_node_confirms_is_taken_as_the_new_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock set right (time sync correcting a wrong clock, both workstations stepped alike): the worker pauses at
    the step, and resumes with the new time as its reference once the node's clock check passed after it (a
    verdict from before the step, or from less than a health period after it, does not count). Without that, a
    corrected clock kept every camera paused for good."""
    import time as time_mod

    from actors import worker as worker_mod

    real = worker_mod.time.time
    offset = [0.0]
    monkeypatch.setattr(worker_mod.time, "time", lambda: real() + offset[0])
    worker = make_worker(tmp_path, FakeClock(100.0), deadline=1e9)
    states: list[str] = []

    def look() -> Do:
        return Do(lambda: states.append(worker.status()["state"]))

    def confirm(after_s: float) -> Do:
        return Do(lambda: worker.renew(1e9, worker._step_seen_at + after_s))

    play(
        worker,
        [Frame(ts(k), 100.0 + k / 10) for k in range(3)]
        + [Do(lambda: offset.__setitem__(0, 30.0)), Frame(ts(300), 100.3), look()]
        + [Do(lambda: worker.renew(1e9, time_mod.monotonic() - 10)), Frame(ts(301), 100.4), look()]  # stale verdict
        + [confirm(0.1), Frame(ts(302), 100.5), look()]  # too soon after the step
        + [confirm(0.6), Frame(ts(315), 101.5), Frame(ts(316), 101.6), look()],
    )
    assert states == ["clock-stepped", "clock-stepped", "clock-stepped", "starting"]
    assert worker.status()["frames"] == 5
    assert segments(tmp_path)[-1] == seg(31, TOKEN, 2, ts(315), ts(316))


def test_a_standby_worker_takes_the_clock_as_of_its_activation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from actors import worker as worker_mod

    real = worker_mod.time.time
    offset = [0.0]
    monkeypatch.setattr(worker_mod.time, "time", lambda: real() + offset[0])
    worker = make_worker(tmp_path, FakeClock(100.0), deadline=None, token=0)
    offset[0] = 60.0  # the clock was set right while the actor waited as a standby
    worker.start = lambda: True  # type: ignore[method-assign]
    worker.activate(TOKEN, None, 1e9)
    assert worker._clock_stepped() is False
    offset[0] = 0.0  # a step after the activation does pause it
    assert worker._clock_stepped() is True


HUNG = -1.0  # a Frame's ``done``: its inference never answers (the gray drill's SIGSTOPped inference process)
SLOW = -2.0  # a Frame's ``done``: its inference answers after two waits


def hung_inference(worker: CameraWorker, clock: FakeClock, stop_after: int | None) -> dict[str, Any]:
    """Give ``worker`` a ``ready`` whose HUNG frames never answer (and SLOW ones after two waits): each wait moves the
    clock by its timeout, and after ``stop_after`` waits the node's runner asks the worker to stop. Returns the
    record: ``waits`` (how many), ``stopped_at`` (the clock when the stop was asked)."""
    seen: dict[str, Any] = {"waits": 0, "stopped_at": None, "slow": {}}

    def ready(ref: Any, timeout: float) -> bool:
        if ref.done not in (HUNG, SLOW):
            return True
        if ref.done == SLOW:
            seen["slow"][ref.ts] = seen["slow"].get(ref.ts, 0) + 1
            if seen["slow"][ref.ts] > 2:
                return True
        seen["waits"] += 1
        clock.advance_to(clock.now + timeout)
        if stop_after is not None and seen["waits"] == stop_after:
            seen["stopped_at"] = clock.now
            worker.stop(timeout=0)
        return False

    worker.ready = ready
    return seen


@pytest.mark.parametrize("stop_after", [1, 5, 30])
def test_a_stop_while_the_inference_hangs_gives_up_the_frames_in_it_and_writes_what_was_processed(
    tmp_path: Path, stop_after: int
) -> None:
    """The inference process is stopped (SIGSTOP) with two frames in it: the camera's stop still ends the loop (not
    at the runner's 30 s timeout) once the frame at the head has been awaited STOP_DRAIN_S (0.5 s): at once for a
    stop that comes later (5 or 30 waits of 0.1 s), 0.5 s after the wait began for one that comes first (1 wait).
    It writes the window of the frames processed before, and counts the two given up."""
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, inflight=2, deadline=1000.0)
    seen = hung_inference(worker, clock, stop_after=stop_after)
    play(worker, [Frame(ts(0), 100.0), Frame(ts(1), 100.1), Frame(ts(2), 100.2, HUNG), Frame(ts(3), 100.3, HUNG)])
    awaited_from = 100.3  # the hung frame at the head is awaited from ts(3)'s hand-over on
    expected_end = max(seen["stopped_at"], awaited_from + STOP_DRAIN_S)
    assert expected_end <= clock.now < expected_end + RESULT_WAIT_S  # the first wait that reached both
    assert worker.frames == 2
    assert worker.abandoned == 2
    assert worker.fenced is False
    assert segments(tmp_path) == [seg(0, TOKEN, 2, ts(0), ts(1))]


def test_a_stop_still_processes_the_frames_whose_results_come_in_time(tmp_path: Path) -> None:
    """An ordinary stop (a camera moved away) while two frames are in inference: their results come within the
    drain, so they are processed and written like any other; nothing is given up."""
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, inflight=2, deadline=1000.0)
    seen = hung_inference(worker, clock, stop_after=1)
    play(worker, [Frame(ts(0), 100.0), Frame(ts(1), 100.1, SLOW), Frame(ts(2), 100.2, SLOW)])
    assert seen["waits"] == 4  # two waits for each of the two slow frames, the stop asked during the first
    assert (worker.frames, worker.abandoned) == (3, 0)
    assert segments(tmp_path) == [seg(0, TOKEN, 3, ts(0), ts(2))]


def test_a_fence_that_lapses_while_the_inference_hangs_pauses_the_worker(tmp_path: Path) -> None:
    """No renewal while the inference hangs: the fence lapses during the wait, the worker pauses (once) and writes
    its window without waiting for the hung answer; the stop then ends it."""
    clock = FakeClock(100.0)
    worker = make_worker(tmp_path, clock, inflight=1)
    seen = hung_inference(worker, clock, stop_after=None)
    steps: list[Frame | Do] = [Frame(ts(0), 100.0), Frame(ts(1), 100.1, HUNG)]
    steps += [Do(lambda: None) for _ in range(3)]  # fenced: the capture is drained, nothing processed
    play(worker, steps)
    expected, t = 0, 100.1  # the waits of RESULT_WAIT_S (0.1 s) from the hung frame's hand-over to the deadline
    while t < D:
        t, expected = t + 0.1, expected + 1
    assert seen["waits"] == expected  # no wait past the deadline
    assert worker.frames == 1
    assert worker.fence_pauses == 1
    assert worker.status()["state"] == "fenced"
    assert segments(tmp_path) == [seg(0, TOKEN, 1, ts(0), ts(0))]


def test_windows_a_full_disk_refused_at_the_stop_are_written_when_it_takes_them_again(tmp_path: Path) -> None:
    """The last flush of a stopping worker fails (a full disk): its windows stay in memory, counted as pending, and
    ``write_kept`` (the node calls it until they are written, then kills the actor) writes them once the disk takes
    them again; while it still refuses, they stay."""
    from cluster.errors import StorageError

    worker = make_worker(tmp_path, FakeClock(100.0), deadline=None)
    real_write = worker.writer.write
    full = [True]

    def write(*args: Any, **kwargs: Any) -> Any:
        if full[0]:
            raise StorageError("cannot write segment: [Errno 28] No space left on device")
        return real_write(*args, **kwargs)

    worker.writer.write = write  # type: ignore[method-assign]
    worker.capture.steps.extend(Frame(ts(k), 100.0 + k / 10) for k in range(25))  # type: ignore[attr-defined]
    worker._run()  # windows 0, 1, 2: none written, the final flush fails
    assert "No space left on device" in worker.error
    st = worker.status()
    assert (st["frames"], st["frames_written"], st["frames_pending"], segments(tmp_path)) == (25, 0, 25, [])
    st = worker.write_kept()  # the disk still refuses: kept
    assert (st["frames_written"], st["frames_pending"], segments(tmp_path)) == (0, 25, [])
    full[0] = False
    st = worker.write_kept()
    assert (st["frames"], st["frames_written"], st["frames_pending"]) == (25, 25, 0)
    assert [(s[3], s[4]) for s in segments(tmp_path)] == [(TOKEN, 10), (TOKEN, 10), (TOKEN, 5)]
    assert [n for n, *_ in worker.drain_written()[1]] == [1, 2, 3]  # handed to the node for the peer
    assert worker.write_kept()["frames_pending"] == 0  # nothing left: idempotent
