"""``actors.capture.Capture`` on real RTSP cameras: camsim (GStreamer's RTSP server) streaming real footage.

Faults are real too: the server process is stopped and restarted on the same port (a rebooted camera), SIGSTOPped
(a hung camera whose TCP connection stays open), or absent (a port nobody listens on). Tests wait with bounded loops
and assert order and exact counts; the only rate check is a wide band around the stream's 10 fps.

Measured here (OpenCV 5.0 FFMPEG backend, camsim on loopback, RTP interleaved in RTSP/TCP as OpenCV asks):
opening takes min(CAP_PROP_OPEN_TIMEOUT_MSEC, ~2.8 s) — ffmpeg probes ~2.8 s of stream and an earlier timeout cuts
the probe short without failing the open — and the frames read while probing come out in a burst after the open.
A SIGSTOPped server makes the first failing read return after 3 x CAP_PROP_READ_TIMEOUT_MSEC (5 s became 15 s),
the next ones after 1 x; an open on a SIGSTOPped server fails after 1 x CAP_PROP_OPEN_TIMEOUT_MSEC.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors.capture import EOS, Capture, FrameMeta
from failover.etcd_cluster import free_port
from tests.rtsp import RtspServer

ONE_BY_ONE = Path(__file__).parents[2].parent / "shared" / "footage" / "one-by-one" / "one-by-one-person-detection.mp4"
FPS = 10.0  # both files are 10 fps
VTEST_SIZE = (768, 576)
ONE_BY_ONE_SIZE = (768, 432)
FIRST_FRAME_S = 30.0  # bound on the wait for a first frame (open + probe take under 3 s here)
RECOVER_S = 40.0  # bound on the wait for a recovery (backoff + open)

Frame = tuple[np.ndarray, FrameMeta]


# ----------------------------------------------------------------------------------------------------- helpers


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, capture: Capture | None = None) -> None:
    """Poll ``predicate`` every 20 ms for at most ``timeout_s``; fail with ``what`` and the capture's stats."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    stats = f": {capture.stats}" if capture is not None else ""
    pytest.fail(f"not within {timeout_s:.0f} s: {what}{stats}")


def next_frame(capture: Capture, timeout_s: float = FIRST_FRAME_S) -> Frame:
    """The next frame, waiting at most ``timeout_s``; fail (with the stats) if none comes."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        item = capture.next(timeout=min(left, 1.0))
        assert item != EOS, f"camera {capture.camera_id}: a stream never ends, got EOS"
        if isinstance(item, tuple):
            return item
    pytest.fail(f"camera {capture.camera_id}: no frame within {timeout_s:.0f} s: {capture.stats}")


def frames_after(capture: Capture, seq: int, timeout_s: float = RECOVER_S) -> Frame:
    """The first frame whose sequence number is above ``seq`` (older buffered ones are skipped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frame, meta = next_frame(capture, max(0.1, deadline - time.monotonic()))
        if meta.seq > seq:
            return frame, meta
    pytest.fail(f"camera {capture.camera_id}: no frame after seq {seq} within {timeout_s:.0f} s: {capture.stats}")


class StateLog:
    """The distinct successive states of a capture, polled every 10 ms (changes shorter than that may be missed)."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self.states: list[str] = [capture.stats.state]

    def poll(self) -> str:
        state = self.capture.stats.state
        if state != self.states[-1]:
            self.states.append(state)
        return state

    def wait(self, states: set[str], timeout_s: float) -> None:
        """Poll until the state is one of ``states`` (bounded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.poll() in states:
                return
            time.sleep(0.01)
        pytest.fail(f"camera {self.capture.camera_id}: state never became {sorted(states)}: {self.states}")


def join_reader(capture: Capture, timeout_s: float = 10.0) -> None:
    """After ``stop()``: wait (bounded) for the current reader thread to leave its read."""
    reader = capture._reader
    if reader is not None:
        reader.join(timeout_s)
        assert not reader.is_alive(), f"camera {capture.camera_id}: reader still reading {timeout_s:.0f} s after stop"


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def server(vtest_path: Path) -> Iterator[RtspServer]:
    """camsim serving vtest.avi (768x576, 10 fps) as ``cam-1``; stopped by pid whatever the test did."""
    with RtspServer({"cam-1": vtest_path}) as rtsp:
        yield rtsp


@pytest.fixture
def two_cameras(vtest_path: Path) -> Iterator[RtspServer]:
    """camsim serving vtest.avi as ``cam-1`` and the one-by-one clip (768x432, 10 fps) as ``cam-2``."""
    if not ONE_BY_ONE.exists():
        pytest.skip(f"{ONE_BY_ONE} not found: the shared footage lives in ../shared beside the repository")
    with RtspServer({"cam-1": vtest_path, "cam-2": ONE_BY_ONE}) as rtsp:
        yield rtsp


@pytest.fixture
def captures() -> Iterator[Callable[..., Capture]]:
    """Start captures with ``captures(camera_id, url, **options)``; every one is stopped after the test."""
    started: list[Capture] = []

    def start(camera_id: str, url: str, **options: Any) -> Capture:
        capture = Capture(camera_id, url, is_stream=True, **options)
        started.append(capture)
        capture.start()
        return capture

    yield start
    for capture in started:
        capture.stop()


# ----------------------------------------------------------------------------------------------------- tests


def test_reads_a_live_stream_at_its_frame_rate(server: RtspServer, captures: Callable[..., Capture]) -> None:
    capture = captures("cam-1", server.url("cam-1"), queue_size=2, watchdog_s=10.0)
    next_frame(capture)
    # Frames read while ffmpeg probed the stream come out in a burst after the open: let it pass.
    warm_until = time.monotonic() + 1.5
    while time.monotonic() < warm_until:
        next_frame(capture)

    dropped_before = capture.stats.frames_dropped
    window_s = 5.0
    metas: list[FrameMeta] = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < window_s:
        frame, meta = next_frame(capture)
        assert frame.shape == (VTEST_SIZE[1], VTEST_SIZE[0], 3)
        metas.append(meta)

    assert capture.stats.state == "running"
    assert capture.stats.source_fps == FPS
    assert capture.stats.reconnects == 0
    assert {(m.width, m.height) for m in metas} == {VTEST_SIZE}
    assert all(m.camera_id == "cam-1" for m in metas)
    # A consumer faster than the camera gets every frame, in order, with increasing timestamps.
    assert capture.stats.frames_dropped == dropped_before
    assert [m.seq for m in metas] == list(range(metas[0].seq, metas[0].seq + len(metas)))
    assert all(b.ts > a.ts for a, b in itertools.pairwise(metas))
    # About 10 frames a second: a band wide enough for a loaded CI machine, narrow enough to catch 5 or 25 fps.
    expected = FPS * elapsed
    assert 0.7 * expected - 1 <= len(metas) <= 1.3 * expected + 1, f"{len(metas)} frames in {elapsed:.2f} s"

    capture.stop()
    join_reader(capture)
    stats = capture.stats
    assert stats.frames_read == stats.frames_delivered + stats.frames_dropped + len(capture._queue)


def test_server_restarted_on_the_same_port(server: RtspServer, captures: Callable[..., Capture]) -> None:
    capture = captures(
        "cam-1", server.url("cam-1"), watchdog_s=10.0, max_backoff_s=1.0, unreachable_after=1000, queue_size=2
    )
    _, before = next_frame(capture)
    states = StateLog(capture)
    states.wait({"running"}, FIRST_FRAME_S)
    pid_before = server.pid

    assert server.stop() == 0  # SIGTERM: a clean exit
    states.wait({"reconnecting"}, RECOVER_S)
    reconnects_while_down = capture.stats.reconnects
    assert "read failed" in capture.stats.last_error or server.url("cam-1") in capture.stats.last_error
    port_before = server.port
    server.start()
    assert (server.port, server.url("cam-1")) == (port_before, f"rtsp://127.0.0.1:{port_before}/cam-1")
    assert server.pid != pid_before
    states.wait({"running"}, RECOVER_S)
    _, after = frames_after(capture, before.seq)
    states.poll()

    assert states.states == ["running", "reconnecting", "running"]
    assert reconnects_while_down == 1  # the failed read, once; refused connects are retries, not reconnects
    assert capture.stats.reconnects >= 1
    assert (after.width, after.height) == VTEST_SIZE
    assert after.ts > before.ts
    assert server.starts == 2


def test_hung_server_is_reopened(server: RtspServer, captures: Callable[..., Capture]) -> None:
    """A SIGSTOPped camera: its TCP connection stays open and silent; the source is reopened, then recovers.

    With OpenCV 5.0 here the read timeout (watchdog_s / 2) gets there first: each read returns within it, the first
    one or two with frames flushed from the decoder, then one fails; the watchdog (no read return for watchdog_s)
    covers reads that do not honour their timeout. Either path counts a reconnect; reopening then fails on the hung
    server (open timeout) until it is continued.
    """
    capture = captures("cam-1", server.url("cam-1"), watchdog_s=2.0, max_backoff_s=1.0, unreachable_after=1000)
    next_frame(capture)
    states = StateLog(capture)
    states.wait({"running"}, FIRST_FRAME_S)
    assert capture.stats.reconnects == 0

    server.suspend()
    try:
        wait_for(lambda: capture.stats.reconnects >= 1, RECOVER_S, "source reopened", capture)
        states.wait({"reconnecting"}, RECOVER_S)
        wait_for(lambda: server.url("cam-1") in capture.stats.last_error, RECOVER_S, "open failed on the URL", capture)
        assert capture.stats.last_error.startswith(f"cannot open stream {server.url('cam-1')}")
        hung_seq = capture._seq  # the next sequence number: frames below it were read before or during the hang
        reconnects_while_hung = capture.stats.reconnects
    finally:
        server.resume()

    states.wait({"running"}, RECOVER_S)
    frame, after = frames_after(capture, hung_seq - 1)
    states.poll()

    assert states.states == ["running", "reconnecting", "running"]
    assert reconnects_while_hung == 1  # one reopen; failed opens are retries of it
    assert capture.stats.reconnects >= 1
    assert (after.width, after.height) == VTEST_SIZE
    assert frame.shape == (VTEST_SIZE[1], VTEST_SIZE[0], 3)


def test_unreachable_camera_does_not_stop_the_others(two_cameras: RtspServer, captures: Callable[..., Capture]) -> None:
    dead_url = f"rtsp://127.0.0.1:{free_port()}/cam-9"
    dead = captures("cam-9", dead_url, watchdog_s=2.0, max_backoff_s=0.5, unreachable_after=3)
    alive = captures("cam-2", two_cameras.url("cam-2"), watchdog_s=10.0)

    wait_for(lambda: dead.stats.state == "unreachable", RECOVER_S, "cam-9 unreachable", dead)
    metas = [next_frame(alive)[1] for _ in range(20)]  # frames keep coming while cam-9 retries

    assert dead.stats.state == "unreachable"
    assert dead_url in dead.stats.last_error
    assert dead.stats.frames_read == 0
    assert dead.next(timeout=0.0) is None
    assert alive.stats.state == "running"
    assert alive.stats.reconnects == 0
    assert {(m.width, m.height) for m in metas} == {ONE_BY_ONE_SIZE}
    assert all(m.camera_id == "cam-2" for m in metas)
    assert [m.seq for m in metas] == sorted({m.seq for m in metas})


def test_slow_consumer_drops_frames_instead_of_queueing(server: RtspServer, captures: Callable[..., Capture]) -> None:
    queue_size = 2
    capture = captures("cam-1", server.url("cam-1"), queue_size=queue_size, watchdog_s=10.0)
    _, last = next_frame(capture)
    read_before = capture.stats.frames_read
    dropped_before = capture.stats.frames_dropped

    # The consumer stops reading for a while; the buffer never holds more than queue_size frames.
    most = 0
    pause_until = time.monotonic() + 3.0
    while time.monotonic() < pause_until:
        most = max(most, len(capture._queue))
        time.sleep(0.01)
    _, first = next_frame(capture)
    dropped = capture.stats.frames_dropped - dropped_before

    assert most <= queue_size
    assert capture.stats.frames_read > read_before + queue_size, "frames kept arriving during the pause"
    assert dropped > 0
    # Dropped from the head: the first frame after the pause follows exactly the dropped ones.
    assert first.seq - last.seq - 1 == dropped

    capture.stop()
    join_reader(capture)
    stats = capture.stats
    assert len(capture._queue) <= queue_size
    assert stats.frames_read == stats.frames_delivered + stats.frames_dropped + len(capture._queue)


def test_a_silent_stream_is_reported_stalled_before_its_read_times_out(
    server: RtspServer, captures: Callable[..., Capture]
) -> None:
    """A camera that goes silent (SIGSTOPped: its connection open, nothing sent) is ``stalled`` after ``stall_s``,
    while the read still waits for its own timeout (``watchdog_s`` / 2 = 5 s here): the node can list the camera as
    failing at its source, and the camera move, without waiting for the reopen. Frames again: ``running``."""
    capture = captures("cam-1", server.url("cam-1"), watchdog_s=10.0, stall_s=1.0, max_backoff_s=1.0)
    next_frame(capture)
    states = StateLog(capture)
    states.wait({"running"}, FIRST_FRAME_S)
    server.suspend()
    try:
        states.wait({"stalled"}, RECOVER_S)
        assert capture.stats.reconnects == 0  # reported, not yet reopened
        assert capture.stats.last_error.startswith("no frame from the stream for ")
        states.wait({"reconnecting"}, RECOVER_S)
    finally:
        server.resume()
    states.wait({"running"}, RECOVER_S)
    states.poll()
    assert states.states == ["running", "stalled", "reconnecting", "running"]


def test_streams_open_with_a_short_probe_unless_the_environment_sets_one() -> None:
    from actors.capture import _ffmpeg_options

    # Nothing in the environment: OpenCV's own default (RTSP over TCP first) kept, with the short probe.
    assert _ffmpeg_options(None, 0.5) == "rtsp_flags;prefer_tcp|analyzeduration;500000"
    assert _ffmpeg_options(None, None) is None  # the fallback: OpenCV and FFmpeg's defaults
    assert _ffmpeg_options(None, 0) is None
    assert _ffmpeg_options("rtsp_transport;udp", 0.25) == "rtsp_transport;udp|analyzeduration;250000"
    assert _ffmpeg_options("analyzeduration;3000000", 0.5) == "analyzeduration;3000000"
