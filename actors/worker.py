"""Per-camera worker (the shared inference server is in ``actors.inference_server``): plain classes, turned into Ray
actors in ``actors.ray_actors``.

The camera worker owns its capture, tracker, lines, zones and segment writer. It sends frames to the shared
inference server, keeping ``inflight`` frames ahead so that inference never waits for a camera, and cuts its events
into segments, one per ``flush_interval_s`` window of frame time. Its loop starts in ``__init__``: when Ray restarts
a killed worker, the new instance simply resumes with the source as it is now.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from actors.analytics import CameraAnalytics
from actors.capture import EOS, Capture, FrameMeta
from actors.detections import Detections
from actors.events import Event
from actors.fisheye import wrap_detection, wrap_ready
from actors.lines import LineCounter
from actors.tracking import ByteTracker, TrackerConfig
from actors.zones import PolygonZone
from cluster import unsafe
from cluster.config import CameraConfig, Config
from cluster.errors import EdgepairError, StorageError
from cluster.fencing import Fence
from cluster.redact import redact
from storage.segments import SegmentWriter
from storage.signing import SignerRef

log = logging.getLogger(__name__)

RESULT_WAIT_S = 0.1
"""How often a worker waiting for an inference result looks at its stop flag and fence."""

STOP_DRAIN_S = 0.5
"""A stopping worker waits for the result of a frame in inference until it has waited this long for it (such frames
are processed and written, as at any stop); past it the inference is taken as not answering (hung) and the frames in
it are given up. A hung inference has usually been awaited for seconds when the stop comes: it ends at once."""

STAGES = ("wait_frame", "submit", "wait_result", "resolve", "track_count", "write")
"""The stages of a camera worker's loop, timed in ``CameraWorker.stage_s`` and reported in its status (``stages``):
waiting for the capture's next frame, handing a frame to inference (in-process: the detection itself), waiting for
its result, taking the result (Ray: ``ray.get``), tracking and counting, writing segments."""

CLOCK_CONFIRM_S = 0.5
"""A worker paused for a step of its wall clock resumes on the node's clock verdict only when that verdict was made at
least this long after the worker saw the step (one health period: the evaluation saw the stepped clock too)."""


def build_analytics(cam: CameraConfig, config: Config) -> CameraAnalytics:
    t = config.tracking
    tracker = ByteTracker(
        TrackerConfig(
            high_thresh=t.high_thresh,
            low_thresh=t.low_thresh,
            new_track_thresh=t.new_track_thresh,
            match_iou=t.match_iou,
            second_match_iou=t.second_match_iou,
            min_hits=t.min_hits,
            max_lost_s=t.max_lost_s,
        )
    )
    lines = [
        LineCounter(ln.id, cam.id, ln.start, ln.end, ln.in_point, hysteresis=ln.hysteresis, anchor=cam.anchor)
        for ln in cam.lines
    ]
    zones = [
        PolygonZone(z.id, cam.id, z.polygon, min_dwell_s=z.min_dwell_s, exit_grace_s=z.exit_grace_s, anchor=cam.anchor)
        for z in cam.zones
    ]
    return CameraAnalytics(cam.id, tracker, lines, zones)


@dataclass
class _Window:
    start: float
    end: float
    token: int = 0  # the fencing token the window was opened under: it is written with it
    frames: int = 0
    first_frame: float = 0.0  # timestamps of the first and last frame processed in the window (0.0: none)
    last_frame: float = 0.0
    frame_times: list[float] = field(default_factory=list)  # every frame processed in the window (its timestamp)
    events: list[Event] = field(default_factory=list)


def camera_capture(config: Config, cam: CameraConfig, fps: float | None, start_ts: float | None) -> Capture:
    """The capture of ``cam`` as the store config sets it (``fps``: the planned rate, else the camera's own)."""
    rt = config.runtime
    return Capture(
        cam.id,
        cam.source,
        is_stream=cam.is_stream,
        fps=fps or cam.fps,
        playback=cam.playback,
        loop=cam.loop,
        queue_size=rt.frame_queue,
        watchdog_s=rt.watchdog_s,
        stall_s=rt.stall_s,
        probe_s=rt.stream_probe_s or None,
        max_width=0 if cam.lens is not None and cam.lens.is_fisheye else rt.max_frame_width,
        substream=cam.substream,
        stream=cam.stream_choice(),
        min_width=rt.substream_min_width,
        start_ts=start_ts,
        credentials=config.credential_source(cam.id),
    )


class CameraWorker:
    """One camera, end to end: capture, inference (remote), tracking, analytics, segments."""

    def __init__(
        self,
        config: Config,
        camera_id: str,
        submit: Callable[[np.ndarray], Any],
        resolve: Callable[[Any], Detections],
        *,
        token: int = 0,
        model_version: str = "",
        start_ts: float | None = None,
        fps: float | None = None,
        fence_deadline: float | None = None,
        autostart: bool = True,
        signing: SignerRef | None = None,
        clock: Callable[[], float] = time.monotonic,
        unsafe_break: frozenset[str] = frozenset(),
        ready: Callable[[Any, float], bool] | None = None,
    ) -> None:
        """``signing``: where this node's key is (:meth:`SignerRef.from_config`); the worker loads its signer itself
        and signs every segment. None writes unsigned segments (the plain-text opt-out, logged once).

        ``clock``: the monotonic clock the fence reads (``fence_deadline`` and renewals are on it); tests drive it.
        ``unsafe_break``: test-only breaks of :mod:`cluster.unsafe` (``fence``, ``drop-window``); never in production.
        ``ready(ref, timeout)``: whether a submitted frame's result is there, waiting up to ``timeout`` seconds (None:
        ``resolve`` answers at once, as an in-process detector does). With it, a stop or a lapsed fence is seen while
        the inference does not answer: a hung inference process cannot hold the camera's stop (and with it the node's
        HA thread) for ever.
        """
        self.config = config
        self.cam = next(c for c in config.cameras if c.id == camera_id)
        # A fisheye camera sends its rotated views to inference and merges their boxes back (actors/fisheye.py).
        self.submit, self.resolve = wrap_detection(self.cam.lens, submit, resolve)
        self.ready = wrap_ready(self.cam.lens, ready)
        self.abandoned = 0  # frames given up in inference at a stop or a fence pause while it did not answer
        self._start_lock = threading.RLock()
        self.token = token
        self.model_version = model_version
        self.config_version = config.version()
        self.capture = camera_capture(config, self.cam, fps, start_ts)
        self.analytics = build_analytics(self.cam, config)
        self.writer = SegmentWriter(
            config.storage.data_dir,
            config.store.id,
            config.store.timezone,
            config.node,
            signer=signing.load() if signing is not None else None,
        )
        self.interval = config.storage.flush_interval_s
        self._window: _Window | None = None
        self._unwritten: list[_Window] = []
        # Segments written and not yet acknowledged by the node (see ``drain_written``): (sequence number, segment id,
        # path, sha256, written at). ``_written_seq`` numbers them; ``_instance`` tells a restarted actor apart.
        self._written: list[tuple[int, str, str, str, float]] = []
        self._written_seq = 0
        self._instance = f"{os.getpid()}-{time.time_ns()}"
        self._init_fence(fence_deadline, clock)
        self.unsafe_break = frozenset(unsafe_break)
        self._stop = threading.Event()
        self._done = threading.Event()
        self.frames = 0
        self.events = 0
        self.segments = 0
        self.frames_written = 0  # frames of the windows written; frames - written - pending is 0 unless one was lost
        self.error = ""
        self.last_ts = 0.0
        self.started_at = time.time()
        self.first_frame_at = 0.0  # wall clock (epoch s) when the first / last frame finished processing
        self.last_frame_at = 0.0
        # Where this worker's thread spends its time (bench/pipeline_fps.py's profile), seconds summed over frames: a
        # clock read per stage and frame, nothing more (see STAGES).
        self.stage_s = dict.fromkeys(STAGES, 0.0)
        self._thread: threading.Thread | None = None
        if autostart:
            self.start()

    # --- control (idempotent) --------------------------------------------------------------------------------
    def _init_fence(self, fence_deadline: float | None, clock: Callable[[], float]) -> None:
        """Fencing: with a deadline (time.monotonic(), shared by every process of the machine) the worker stops by
        itself once it passes, unless the node agent renewed it; None means no election (`edgepair run`)."""
        self.fence: Fence | None = None if fence_deadline is None else Fence(clock=clock, deadline=fence_deadline)
        self.fenced = False
        self.fence_pauses = 0  # times this worker paused on its fence (issue 21's soak: must stay 0 under load)
        self.clock = clock
        # The wall clock against the monotonic one: under a fence (a pair), a worker whose wall clock steps by more
        # than the bound pauses as a fenced one does (see ``_clock_stepped``); the node's health sees the step too.
        self.max_clock_step_s = self.config.cluster.health.max_clock_offset_s
        self._wall_offset = time.time() - time.monotonic()
        self.clock_stepped = 0.0  # the step while paused for it, else 0
        self._step_seen_at = float("-inf")  # time.monotonic() when the pause for a step began
        self._clock_ok_at = float("-inf")  # the node's latest clock verdict that passed (time.monotonic(), renew)
        self._resume_from = float("-inf")  # frames before this timestamp belong to a window the fence closed
        self._closed_until = float("-inf")  # end of the last window closed: written once, never opened again

    def start(self) -> bool:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"camera-{self.cam.id}", daemon=True)
                self._thread.start()
        return True

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Drain: finish the open visits, flush the open segment, stop the capture."""
        self._stop.set()
        self._done.wait(timeout)
        return self.status()

    def activate(
        self, token: int, fps: float | None, deadline: float | None, unsafe_break: frozenset[str] | None = None
    ) -> bool:
        """Start a standby worker (created with ``autostart=False``) under ``token``: no process to spawn.

        ``unsafe_break`` (test-only, :mod:`cluster.unsafe`), when given, replaces the worker's set of breaks.
        """
        # Ray runs an actor's calls on several threads (max_concurrency): two activations (the runner's, and one of
        # statuses() when a status answered first) must not both start the loop.
        with self._start_lock:
            if unsafe_break is not None:
                self.unsafe_break = frozenset(unsafe_break)
            if self._thread is None:
                self.token = token
                if fps:
                    self.capture.target_fps = fps
                self.fence_deadline = deadline
                self.started_at = time.time()
                self._wall_offset = self.started_at - time.monotonic()  # a standby created long ago: its clock now
            else:
                self.retoken(token)
                if deadline is not None:
                    self.renew(deadline)
            return self.start()

    def retoken(self, token: int) -> bool:
        """Carry on under a newer fencing token (a new leader kept this camera here): no restart, no gap.

        The open window keeps the token it was opened under; the next window is written under ``token``.
        """
        if token > self.token:
            log.info("camera %s: now under token %d (was %d)", self.cam.id, token, self.token)
            self.token = token
        return True

    @property
    def fence_deadline(self) -> float | None:
        """The fence's deadline (``time.monotonic()``), None without an election (``edgepair run``)."""
        return None if self.fence is None else self.fence.deadline

    @fence_deadline.setter
    def fence_deadline(self, deadline: float | None) -> None:
        self.fence = None if deadline is None else Fence(clock=self.clock, deadline=deadline)

    def renew(self, deadline: float, clock_ok_at: float | None = None) -> bool:
        """Push the fence deadline (monotonic seconds). A fenced worker resumes once the deadline is ahead again.

        ``clock_ok_at``: when the node's clock probe last passed (``time.monotonic()``); a worker paused for a step
        of the wall clock resumes once it passed after the step (see ``_clock_stepped``)."""
        if self.fence is not None:
            self.fence.extend(deadline)
        if clock_ok_at is not None:
            self._clock_ok_at = max(self._clock_ok_at, clock_ok_at)
        return True

    def _fence_expired(self) -> bool:
        if unsafe.FENCE in self.unsafe_break:
            return False  # test-only break (cluster.unsafe): the fence is off, the worker never pauses
        if self.fence is not None and self.fence.expired():
            if not self.fenced:
                self.fenced = True
                self.fence_pauses += 1
                log.warning(
                    "camera %s: fenced: lease not renewed in time, processing paused (token %d)",
                    self.cam.id,
                    self.token,
                )
            return True
        if self.fenced:
            self.fenced = False
            log.info("camera %s: lease renewed, processing again under token %d", self.cam.id, self.token)
        return False

    def _clock_stepped(self) -> bool:
        """Under a fence: True while the wall clock is off by more than ``max_clock_step_s`` from where the monotonic
        clock says it should be since this worker started (a clock stepped by hand or by a broken time sync).

        Frame times, window bounds and event times all come from the wall clock: a worker that went on would write
        windows minutes away from the true time, under a token that another producer of the same camera may hold
        when that time comes. It pauses at once instead (its open window written, nothing processed), and resumes
        when the clock is back, or when the node's clock probe passed *after* the step (``renew``'s ``clock_ok_at``,
        at least one health period later): the step was a correction (a wrong clock set right by time sync, a step
        of both workstations alike), the new time agrees with the peer's, and the worker takes it as its reference.
        A clock that stays off the peer's keeps the worker paused: the node's health counts it and the leader moves
        the cameras. Without a fence (``edgepair run``, one node) there is no peer to tell the right clock: no pause.
        """
        if self.fence_deadline is None:
            return False
        step = (time.time() - time.monotonic()) - self._wall_offset
        if abs(step) > self.max_clock_step_s:
            if not self.clock_stepped:
                self._step_seen_at = time.monotonic()
                log.warning(
                    "camera %s: the wall clock stepped by %+.1f s: processing paused until it is back or the"
                    " node's clock check passes (token %d)",
                    self.cam.id,
                    step,
                    self.token,
                )
            if self._clock_ok_at >= self._step_seen_at + CLOCK_CONFIRM_S:
                log.warning(
                    "camera %s: the node's clock check passed after the step (%+.1f s): taking the new time,"
                    " processing again",
                    self.cam.id,
                    step,
                )
                self._wall_offset = time.time() - time.monotonic()
                self.clock_stepped = 0.0
                return False
            self.clock_stepped = step
            return True
        if self.clock_stepped:
            log.info("camera %s: the wall clock is back (%+.1f s): processing again", self.cam.id, step)
            self.clock_stepped = 0.0
        return False

    def _await(self, ref: Any) -> bool:
        """Wait for a frame's inference result: True once it is there; False when a stop is asked or the fence
        lapses first (the loop then pauses, or ends, without it)."""
        if self.ready is None:
            return True
        began = self.clock()
        while not self.ready(ref, RESULT_WAIT_S):
            if self._paused():
                return False
            if self._stop.is_set() and self.clock() - began >= STOP_DRAIN_S:
                return False  # the inference does not answer: the stop gives up what is in it
        return True

    def _paused(self) -> bool:
        return self._fence_expired() or self._clock_stepped()

    def _wait_fenced(self, inflight: deque[tuple[Any, FrameMeta]]) -> None:
        """Fenced: drop what is in flight, close the open window, process nothing until a renewal or stop.

        Frames already processed were processed under a valid lease and are flushed; nothing is processed while
        the deadline is past. The node's runner stops this camera when the HA loop decides so; a late-starting or
        restarted actor (whose constructor deadline has passed) simply waits for the next renewal.

        After a renewal, processing resumes with the first frame past the window this closed: that window is written
        now and segments are immutable, so a frame of it cannot be added later (under the same token the segment
        would be written twice with other content, which the writer refuses; under a newer one the same window
        would be claimed twice by this node).
        """
        inflight.clear()
        if self._window is not None:
            self._resume_from = max(self._resume_from, self._window.end)
        w = self._window
        if w is not None and w.start <= self.last_ts < w.end:
            # The open visits and crossings end with the last frame processed, in the window written now: once it is
            # written no later event can join it (a stop after this pause would otherwise write the window again,
            # with these events, and the writer refuses a second version: they would be lost).
            self._add_events(self.analytics.finish(self.last_ts), self.last_ts)
        self._flush()
        while not self._stop.is_set() and self._paused():
            self.capture.next(timeout=0.05)  # keep the source drained: old frames are not processed later

    def drain_written(self, instance: str = "", acked: int = 0) -> tuple[str, list[tuple[int, str, str, str, float]]]:
        """Segments written and not yet acknowledged, for the node's replicator to push to the peer at once.

        The caller acknowledges what it received by passing back this actor's ``instance`` and the last sequence
        number it got: those entries are dropped, the rest are returned again. A reply lost on the way (a call that
        timed out while the actor was busy or just unfrozen) therefore loses nothing: the next call returns the same
        segments. An ``instance`` of another actor (one Ray restarted) acknowledges nothing."""
        if instance == self._instance and acked > 0:
            k = 0
            while k < len(self._written) and self._written[k][0] <= acked:
                k += 1
            del self._written[:k]  # in place: the camera thread may be appending
        return self._instance, list(self._written)

    def write_kept(self) -> dict[str, Any]:
        """A stopped worker whose disk failed at its last flush still holds windows in memory (``frames_pending``):
        try to write them again (the node calls this until they are written, then kills the actor). Returns the
        status. Does nothing while the camera's loop runs (it writes its own windows)."""
        if self._done.is_set():
            with self._start_lock:
                try:
                    self._flush()
                except EdgepairError as exc:  # anything but the disk (those keep the windows and return)
                    log.error("camera %s: cannot write the windows kept in memory: %s", self.cam.id, exc)
        return self.status()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def status(self) -> dict[str, Any]:
        s = self.capture.stats
        return {
            "camera_id": self.cam.id,
            "state": "clock-stepped"
            if self.clock_stepped
            else "fenced"
            if self.fenced
            else "ended"
            if self._done.is_set() and not self._stop.is_set()
            else s.state,
            "token": self.token,
            "active": self._thread is not None,
            "pid": os.getpid(),
            "done": self._done.is_set(),
            "frames": self.frames,
            "events": self.events,
            "segments": self.segments,
            "frames_written": self.frames_written,
            "frames_pending": sum(w.frames for w in list(self._unwritten))
            + (win.frames if (win := self._window) is not None else 0),
            "dropped": s.frames_dropped,
            "fence_pauses": self.fence_pauses,
            "reconnects": s.reconnects,
            "error": redact(self.error or s.last_error),
            "fps": round(self.frames / max(1e-6, time.time() - self.started_at), 2),
            "first_frame_at": self.first_frame_at,
            "last_frame_at": self.last_frame_at,
            "capture": asdict(s),
            "stages": {k: round(v, 4) for k, v in self.stage_s.items()},
        }

    # --- loop --------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.capture.start()
            self._loop()
        except EdgepairError as exc:
            self.error = redact(exc)
            log.error("camera %s: %s", self.cam.id, exc)
        except Exception as exc:  # keep the node alive; report and stop this camera
            self.error = redact(f"{type(exc).__name__}: {exc}")
            log.exception("camera %s: pipeline failed", self.cam.id)
        finally:
            self.capture.stop()
            self._done.set()

    def _loop(self) -> None:
        inflight: deque[tuple[Any, FrameMeta]] = deque()
        ended = False
        stage = self.stage_s
        while True:
            if self._paused():
                self._wait_fenced(inflight)
                if self._stop.is_set():
                    break
                continue
            while not ended and not self._stop.is_set() and len(inflight) < self.config.runtime.inflight:
                t0 = time.perf_counter()
                item = self.capture.next(timeout=0.0 if inflight else 0.5)
                t1 = time.perf_counter()
                stage["wait_frame"] += t1 - t0
                if item == EOS:
                    ended = True
                elif item is None:
                    break
                elif isinstance(item, tuple):
                    frame, meta = item
                    inflight.append((self.submit(frame), meta))
                    stage["submit"] += time.perf_counter() - t1
            if inflight:
                ref, meta = inflight[0]
                t0 = time.perf_counter()
                answered = self._await(ref)
                t1 = time.perf_counter()
                stage["wait_result"] += t1 - t0
                if not answered:
                    if self._stop.is_set():
                        log.warning(
                            "camera %s: stopping: the inference did not answer for %.1f s, %d frames in it given up",
                            self.cam.id,
                            STOP_DRAIN_S,
                            len(inflight),
                        )
                        self.abandoned += len(inflight)
                        inflight.clear()
                        break
                    continue  # the fence lapsed: _wait_fenced drops what is in flight
                inflight.popleft()
                dets = self.resolve(ref)
                stage["resolve"] += time.perf_counter() - t1
                if self._paused():
                    continue  # the lease lapsed (or the clock stepped) while this frame was in inference: dropped
                if meta.ts < self._resume_from:
                    continue  # its window was closed and written when the fence paused the worker
                self._process(dets, meta)
            elif ended or self._stop.is_set():
                break
            else:
                self._flush_idle()
        ts = self.last_ts or time.time()
        self._add_events(self.analytics.finish(ts), ts)
        self._flush(final=True)

    def _process(self, dets: Detections, meta: FrameMeta) -> None:
        t0 = time.perf_counter()
        _tracked, events = self.analytics.process(dets, meta.ts, meta.width, meta.height)
        self.stage_s["track_count"] += time.perf_counter() - t0
        self.last_ts = meta.ts
        self.last_frame_at = time.time()
        if not self.first_frame_at:
            self.first_frame_at = self.last_frame_at
        self._roll_window(meta.ts)  # may flush the previous window (a write) before this frame is counted
        w = self._window
        assert w is not None
        w.frames += 1
        self.frames += 1  # after its window's count: status() never sees a frame in neither (drills read them)
        w.first_frame = w.first_frame or meta.ts
        w.last_frame = meta.ts
        w.frame_times.append(min(max(meta.ts, w.start), w.end))
        self._add_events(events, meta.ts)

    def _add_events(self, events: list[Event], ts: float) -> None:
        if not events:
            return
        if self._window is None:
            self._roll_window(ts)
        assert self._window is not None
        self._window.events.extend(events)
        self.events += len(events)

    def _roll_window(self, ts: float) -> None:
        if self._window is not None and ts < self._window.end:
            return
        if self._window is not None:
            self._flush()
        # A window once closed is never opened again (segments are immutable: a second version of it would be
        # refused and its events lost): what comes after it with an earlier time (the events that end the open visits
        # at a stop after a stalled source closed the window, a clock stepped back) goes to the first window after.
        start = math.floor(max(ts, self._closed_until) / self.interval) * self.interval
        self._window = _Window(round(start, 6), round(start + self.interval, 6), self.token)

    def _flush_idle(self) -> None:
        """A live source that stalls still closes its window once the wall clock has passed it."""
        if self._window is not None and self.cam.playback != "fast" and time.time() > self._window.end + self.interval:
            self._flush()

    def _flush(self, final: bool = False) -> None:
        t0 = time.perf_counter()
        try:
            self._write(final)
        finally:
            self.stage_s["write"] += time.perf_counter() - t0

    def _write(self, final: bool) -> None:
        if self._window is not None:
            self._unwritten.append(self._window)
            self._closed_until = max(self._closed_until, self._window.end)
            self._window = None
        while self._unwritten:
            w = self._unwritten[0]
            if unsafe.DROP_WINDOW in self.unsafe_break and unsafe.drops_window(w.start):
                self._unwritten.pop(0)  # test-only break (cluster.unsafe): this window is never written
                log.debug("camera %s: UNSAFE drop-window: dropped window %.3f-%.3f", self.cam.id, w.start, w.end)
                continue
            try:
                info = self.writer.write(
                    self.cam.id,
                    w.start,
                    w.end,
                    w.events,
                    frames=w.frames,
                    token=w.token,
                    config_version=self.config_version,
                    model_version=self.model_version,
                    first_frame=min(max(w.first_frame, w.start), w.end) if w.frames else 0.0,
                    last_frame=min(max(w.last_frame, w.first_frame, w.start), w.end) if w.frames else 0.0,
                    frame_times=w.frame_times if len(w.frame_times) == w.frames else (),
                )
            except StorageError as exc:
                self.error = redact(exc)
                log.error("camera %s: %s; keeping %d windows in memory", self.cam.id, exc, len(self._unwritten))
                if final:
                    raise
                return
            self._unwritten.pop(0)
            self.segments += 1
            self.frames_written += w.frames
            if not info.existed:
                self._written_seq += 1
                self._written.append((self._written_seq, info.segment_id, str(info.path), info.sha256, time.time()))
                del self._written[:-10_000]  # bounded: the replicator's anti-entropy catches up with the rest
