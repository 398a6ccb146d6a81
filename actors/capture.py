"""Camera capture with OpenCV: video files, RTSP and HTTP streams (thin I/O module).

A reader thread pulls frames into a small ring buffer. When inference cannot keep up, the oldest frame is dropped
and counted, never queued without bound (``fast`` file playback blocks instead: every frame is processed).
A watchdog thread reopens a source whose read has hung (OpenCV's read can block far past its own timeout on a hung
RTSP server); reconnects back off exponentially through tenacity; the camera reports its state while others run.
A stream that delivers no frame for ``stall_s`` is reported ``stalled`` at once (a source failure, not the node's:
the camera can move to a workstation that still reaches it) while the read waits for its own timeout.

Opening a stream: FFmpeg probes a new stream for up to 5 s of media before the first frame (``analyzeduration``);
an RTSP camera then took 2.8 s to open here, which every takeover of that camera paid. Streams are probed for
``probe_s`` (0.5 s: opened in 0.6 s); a stream that does not open so probed is tried again with FFmpeg's defaults.

Credentials: ``source`` never holds a password after construction (user info written in it is split off at once).
The camera's user and password are resolved from its :class:`~cluster.credentials.CredentialSource` (environment,
credentials file, the URL's user info) each time the stream is opened, injected into the URL handed to OpenCV and
nowhere else; every message, log line and ``stats.last_error`` goes through :func:`cluster.redact.redact`. A Capture
installs the log redaction of its process (Ray's camera worker processes log through handlers of their own).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_exponential

from cluster.credentials import CredentialSource, inject
from cluster.errors import ConfigError, SourceError
from cluster.redact import install_log_redaction, redact, register_secret, split_userinfo

log = logging.getLogger(__name__)

EOS = "eos"  # end of a (non-looping) file


@dataclass
class FrameMeta:
    camera_id: str
    seq: int  # frames delivered by this capture, 0-based
    index: int  # frame index in the source (files) or frames read (streams)
    ts: float  # UTC epoch seconds of the frame
    width: int
    height: int


@dataclass
class CaptureStats:
    state: str = "starting"  # starting, running, reconnecting, unreachable, ended, stopped
    frames_read: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    reader_restarts: int = 0  # reader threads that raised unexpectedly and were started again (after a backoff)
    last_error: str = ""
    source_fps: float = 0.0
    decode_s: float = 0.0  # time spent reading and decoding frames (every frame read, kept or skipped)
    extra: dict[str, Any] = field(default_factory=dict)


_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPTIONS_LOCK = threading.Lock()  # the options reach OpenCV through the environment: one open at a time sets them


def _ffmpeg_options(base: str | None, probe_s: float | None) -> str | None:
    """The FFmpeg options for one open, given the environment's (``base``): those, plus a short probe unless they set
    one. OpenCV asks for RTSP over TCP (``rtsp_flags;prefer_tcp``) only when the variable is unset: options of our
    own keep asking for it."""
    if probe_s is None or probe_s <= 0 or (base and "analyzeduration" in base):
        return base
    ours = f"analyzeduration;{int(probe_s * 1_000_000)}"
    return f"{base}|{ours}" if base else f"rtsp_flags;prefer_tcp|{ours}"


def _open(
    source: str,
    is_stream: bool,
    timeout_ms: int,
    credentials: CredentialSource | None = None,
    probe_s: float | None = None,
) -> cv2.VideoCapture:
    """Open ``source``; a stream with its credentials injected here, at the last moment. Errors are redacted.
    ``probe_s``: how much of a stream FFmpeg reads before the first frame (None: FFmpeg's default, 5 s)."""
    if not is_stream:
        if not os.path.exists(source):
            raise SourceError(f"video file {redact(source)} not found: check cameras[].source in the store config")
        cap = cv2.VideoCapture(source)
    else:
        try:
            creds = credentials.resolve() if credentials is not None else None
        except ConfigError as exc:  # a credentials file not private or malformed: retried, shown as the error
            raise SourceError(redact(f"camera {credentials.camera_id if credentials else '?'}: {exc}")) from None
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        with _OPTIONS_LOCK:
            before = os.environ.get(_OPTIONS_ENV)
            options = _ffmpeg_options(before, probe_s)
            if options is not None:
                os.environ[_OPTIONS_ENV] = options
            try:
                cap = cv2.VideoCapture(inject(source, creds), cv2.CAP_FFMPEG, params)
            finally:
                if before is None:
                    os.environ.pop(_OPTIONS_ENV, None)
                else:
                    os.environ[_OPTIONS_ENV] = before
    if not cap.isOpened():
        cap.release()
        what = "stream" if is_stream else "video file"
        hint = "check the URL, the camera and the network" if is_stream else "is it a video OpenCV can decode?"
        raise SourceError(f"cannot open {what} {redact(source)}: {hint}")
    return cap


SUB_RETRY_S = 30.0
"""auto: after the sub-stream failed to open and the main stream is read, the sub-stream is tried again this long
after (then 60, 120, ... up to :data:`SUB_RETRY_MAX_S`): a blip on the sub-stream does not leave the node decoding
the main stream for good."""
SUB_RETRY_MAX_S = 300.0


def _frame_size(cap: cv2.VideoCapture) -> tuple[int, int]:
    """``(width, height)`` of an opened stream's frames: as reported, or, where not reported before a frame is
    decoded (0: MJPEG over HTTP, some cameras), measured on one frame. SourceError (``cap`` released) if none comes."""
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    if width > 0:
        return width, height
    ok, frame = cap.read()
    if not ok or frame is None:
        cap.release()
        raise SourceError("it opened, but reports no size and sent no frame")
    return int(frame.shape[1]), int(frame.shape[0])


class Capture:
    """Frames of one camera, paced by ``playback``: ``fast``, ``realtime`` or ``live`` (files), natural (streams)."""

    def __init__(
        self,
        camera_id: str,
        source: str,
        *,
        is_stream: bool = False,
        fps: float | None = None,
        playback: str = "realtime",
        loop: bool = False,
        queue_size: int = 2,
        watchdog_s: float = 10.0,
        stall_s: float = 2.0,
        probe_s: float | None = 0.5,
        max_backoff_s: float = 30.0,
        unreachable_after: int = 5,
        start_ts: float | None = None,
        credentials: CredentialSource | None = None,
        max_width: int = 0,
        substream: str | None = None,
        stream: str = "main",
        min_width: int = 0,
    ) -> None:
        """``substream``, ``stream`` (auto, main or sub) and ``min_width``: which of a camera's two streams is read
        (:meth:`_open_stream`). A sub-stream is read with the camera's credentials and must hold no user info."""
        install_log_redaction()  # idempotent; this may be a fresh Ray worker process
        if stream not in ("auto", "main", "sub") or (stream != "main" and not (is_stream and substream)):
            raise ValueError(f"camera {camera_id}: stream {stream!r} needs a sub-stream URL (and a stream source)")
        if substream is not None and split_userinfo(substream)[1] is not None:
            raise ValueError(f"camera {camera_id}: the sub-stream URL must not hold user info")
        self.substream = substream
        self.stream = stream
        self.min_width = min_width
        self._sub_too_narrow = ""  # why auto reads the main stream (the sub-stream's size), once measured
        # auto reading the main stream because the sub-stream did not open: when to try the sub-stream again
        # (time.monotonic(); inf: not waiting), and the wait after that (doubling to SUB_RETRY_MAX_S)
        self._sub_retry_at = math.inf
        self._sub_retry_s = SUB_RETRY_S
        self._probing = False
        self.camera_id = camera_id
        bare, userinfo = split_userinfo(source) if is_stream else (source, None)
        if userinfo is not None:  # a URL with user info given directly: keep it apart, like the config loader does
            register_secret(userinfo.partition(":")[2])
            if credentials is None:
                credentials = CredentialSource(camera_id, url_userinfo=userinfo)
            elif credentials.url_userinfo is None:
                credentials = replace(credentials, url_userinfo=userinfo)
        self.source = bare  # never holds a password
        self.reading = bare  # the URL being read: source, or the sub-stream (for log lines)
        self.credentials = credentials if credentials is not None else CredentialSource(camera_id)
        self.is_stream = is_stream
        self.target_fps = fps
        self.playback = "realtime" if is_stream else playback
        self.loop = loop
        self.watchdog_s = watchdog_s
        self.stall_s = stall_s
        self.probe_s = probe_s
        self.max_backoff_s = max_backoff_s
        self._reader_failures = 0  # reader failures in a row (no frame read in between)
        self._frames_at_failure = -1
        self.unreachable_after = unreachable_after
        self.max_width = max_width  # frames wider are scaled down once (0: never)
        self.stats = CaptureStats()
        self._queue: deque[tuple[np.ndarray, FrameMeta]] = deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._generation = 0
        self._last_progress = time.monotonic()
        self._streaming = False  # a frame came since the stream was (re)opened: only then can it stall
        self._ended = False
        self._seq = 0
        self._start_ts = start_ts if start_ts is not None else time.time()
        self._reader: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None

    # --- public -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.is_stream:
            # A file that cannot be opened is a config error, reported at once.
            _open(self.source, False, 0).release()
        self._spawn_reader()
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.camera_id}", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.stats.state = "stopped" if self.stats.state != "ended" else "ended"

    def next(self, timeout: float = 1.0) -> tuple[np.ndarray, FrameMeta] | str | None:
        """The oldest buffered frame, ``EOS`` at the end of a file, or None if none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._ended:
                    return EOS
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(left)
            item = self._queue.popleft()
            self._cond.notify_all()
        self.stats.frames_delivered += 1
        return item

    # --- reader -------------------------------------------------------------------------------------------
    def _spawn_reader(self) -> None:
        self._generation += 1
        self._last_progress = time.monotonic()
        self._reader = threading.Thread(
            target=self._read_loop, args=(self._generation,), name=f"capture-{self.camera_id}", daemon=True
        )
        self._reader.start()

    def _watch(self) -> None:
        while not self._stop.wait(min(0.25, self.watchdog_s / 4)):
            try:
                self._watch_once()
            except Exception:  # the watchdog never dies: it is what reopens a hung source
                self.stats.reader_restarts += 1
                log.exception("camera %s: watchdog check failed; checking again", self.camera_id)

    def _watch_once(self) -> None:
        if self._ended or self.stats.state in ("reconnecting", "unreachable"):
            return
        if time.monotonic() >= self._sub_retry_at and not self._probing and self.stats.state == "running":
            self._probing = True
            threading.Thread(target=self._probe_sub, name=f"sub-probe-{self.camera_id}", daemon=True).start()
        stalled = time.monotonic() - self._last_progress
        if self.is_stream and self._streaming and self.stats.state == "running" and stalled > self.stall_s:
            self.stats.state = "stalled"  # the read still waits; a frame sets it running again
            self.stats.last_error = f"no frame from the stream for {stalled:.1f} s"
            log.warning("camera %s: no frame for %.1f s from %s (stalled)", self.camera_id, stalled, self.reading)
        if stalled > self.watchdog_s:
            log.warning(
                "camera %s: no frame for %.1f s from %s, reopening the source", self.camera_id, stalled, self.reading
            )
            self.stats.last_error = f"read hung for {stalled:.0f} s"
            self.stats.reconnects += 1
            self.stats.state = "reconnecting"
            self._spawn_reader()  # the hung thread exits when its read returns: its generation is stale

    def _connect(self, generation: int) -> cv2.VideoCapture:
        attempts = 0

        def attempt() -> cv2.VideoCapture:
            nonlocal attempts
            attempts += 1
            if self._stop.is_set() or generation != self._generation:
                raise _Abandon()
            # A short probe first; a stream that does not open so gets FFmpeg's own on the next attempts.
            probe_s = self.probe_s if attempts == 1 else None
            try:
                return self._open_stream(probe_s)
            except SourceError as exc:
                if self._stop.is_set():
                    raise _Abandon() from exc
                self.stats.last_error = redact(exc)
                self.stats.state = "unreachable" if attempts >= self.unreachable_after else "reconnecting"
                log.warning("camera %s: %s (attempt %d, retrying with backoff)", self.camera_id, exc, attempts)
                raise

        retrying = Retrying(
            retry=retry_if_exception_type(SourceError),
            wait=wait_exponential(multiplier=0.5, max=self.max_backoff_s),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._backoff_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except RetryError as exc:  # pragma: no cover - reraise=True makes this rare
            raise SourceError(redact(exc)) from exc

    def _open_stream(self, probe_s: float | None) -> cv2.VideoCapture:
        """Open the camera's source, or its sub-stream: ``stream`` main or sub reads that one; auto reads the
        sub-stream when its frames are at least ``min_width`` wide, else the main stream (a sub-stream found too
        narrow is not opened again by this capture), and the main stream when the sub-stream does not open (and the
        sub-stream when the main one does not). ``stats.extra["stream"]`` says which, ``["stream_why"]`` why."""
        timeout_ms = int(self.watchdog_s * 500)
        # Each open has its own time (half the watchdog's): two or three in a row are not a hung read.

        def main() -> cv2.VideoCapture:
            if self._stop.is_set():  # stopped while the other stream opened: no second open (a timeout)
                raise _Abandon()
            self._last_progress = time.monotonic()
            return _open(self.source, self.is_stream, timeout_ms, self.credentials, probe_s)

        def sub() -> cv2.VideoCapture:
            assert self.substream is not None
            if self._stop.is_set():
                raise _Abandon()
            self._last_progress = time.monotonic()
            return _open(self.substream, True, timeout_ms, self.credentials, probe_s)

        if self.stream == "main" or self.substream is None:
            return self._chose("main", "", main())
        if self.stream == "sub":
            return self._chose("sub", "", sub())
        main_error: SourceError | None = None  # the main stream's failure in this attempt (tried once an attempt)
        if self._sub_too_narrow:
            try:
                return self._chose("main", self._sub_too_narrow, main())
            except SourceError as exc:
                main_error = exc  # the main stream is down: a narrow sub-stream beats none
        try:
            cap = sub()
            width, height = _frame_size(cap)
        except SourceError as sub_error:
            try:
                if main_error is None:
                    return self._chose("main", f"the sub-stream does not open ({sub_error})", main())
            except SourceError as exc:
                main_error = exc
            raise SourceError(f"{main_error}; and the sub-stream: {sub_error}") from None
        if width >= self.min_width:
            return self._chose("sub", f"{width}x{height}, at least {self.min_width} wide", cap)
        why = f"the sub-stream is {width}x{height}, narrower than runtime.substream_min_width {self.min_width}"
        try:
            if main_error is not None:
                raise main_error
            main_cap = main()
        except SourceError as exc:
            return self._chose("sub", f"{why}, but the main stream does not open ({exc})", cap)
        except _Abandon:
            cap.release()
            raise
        cap.release()
        self._sub_too_narrow = why
        return self._chose("main", why, main_cap)

    def _probe_sub(self) -> None:
        """auto, reading the main stream because the sub-stream did not open: open the sub-stream (nothing read but
        its size); once it opens wide enough, the reader starts again on it (a reconnect: under a second without
        frames); else try again later, each wait twice the last (at most SUB_RETRY_MAX_S)."""
        try:
            assert self.substream is not None
            cap = _open(self.substream, True, int(self.watchdog_s * 500), self.credentials, self.probe_s)
            try:
                width, _height = _frame_size(cap)
            finally:
                cap.release()
            if width < self.min_width:
                raise SourceError(f"it is {width} wide, narrower than {self.min_width}")
        except Exception as exc:  # SourceError, an OpenCV error: the main stream is kept
            self._sub_retry_s = min(2.0 * self._sub_retry_s, SUB_RETRY_MAX_S)
            self._sub_retry_at = time.monotonic() + self._sub_retry_s
            log.debug("camera %s: the sub-stream is still not usable (%s)", self.camera_id, redact(exc))
            return
        finally:
            self._probing = False
        if self._stop.is_set():
            return
        log.info("camera %s: its sub-stream opens again: reading it instead of the main stream", self.camera_id)
        self._sub_retry_at = math.inf
        self.stats.reconnects += 1
        self._spawn_reader()  # the main stream's reader ends at its next frame (its generation is stale)

    def _chose(self, which: str, why: str, cap: cv2.VideoCapture) -> cv2.VideoCapture:
        if self.stats.extra.get("stream") != which and self.substream is not None:
            log.info("camera %s: reading its %s stream%s", self.camera_id, which, f" ({redact(why)})" if why else "")
        self.stats.extra["stream"] = which
        self.reading = self.substream if which == "sub" and self.substream is not None else self.source
        if which == "main" and why.startswith("the sub-stream does not open"):
            self._sub_retry_at = time.monotonic() + self._sub_retry_s  # tried again in the background
        else:
            self._sub_retry_at, self._sub_retry_s = math.inf, SUB_RETRY_S
        self.stats.extra["stream_why"] = redact(why)
        return cap

    def _backoff_sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _read_loop(self, generation: int) -> None:
        try:
            cap = self._connect(generation)
        except (_Abandon, SourceError):
            return
        try:
            self._read_frames(cap, generation)
        except Exception as exc:  # the reader never dies silently: log, count, back off, open the source again
            self.stats.reader_restarts += 1
            self.stats.last_error = redact(f"reader failed: {type(exc).__name__}: {exc}")
            self.stats.state = "reconnecting"
            log.exception("camera %s: reader failed (%d so far), reopening", self.camera_id, self.stats.reader_restarts)
            if not self._stop.wait(self._next_backoff()):
                if generation == self._generation:
                    self._spawn_reader()
        finally:
            cap.release()

    def _next_backoff(self) -> float:
        """The wait before the reader opens its source again after a failure: it grows with the failures in a row
        only (no frame read since the last one); a failure after frames flowed again waits 0.5 s."""
        read = self.stats.frames_read
        self._reader_failures = self._reader_failures + 1 if read == self._frames_at_failure else 1
        self._frames_at_failure = read
        return reader_backoff(self._reader_failures)

    def _read_frames(self, cap: cv2.VideoCapture, generation: int) -> None:
        src_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        src_fps = src_fps if 1.0 <= src_fps <= 240.0 else 25.0
        self.stats.source_fps = src_fps
        fps = min(self.target_fps or src_fps, src_fps)
        step = src_fps / fps  # source frames per delivered frame
        n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._last_progress = time.monotonic()
        self._streaming = False  # no frame yet from this connection: its first one may take a key frame's interval
        self.stats.state = "running"
        index = -1
        next_pick = 0.0
        pacer = StreamPacer(self.target_fps)
        base_ts = self._start_ts
        loop_offset = 0
        wall0 = time.monotonic()
        if self.playback == "live" and n_frames > 0:
            self._read_live(cap, generation, src_fps, n_frames)
            return
        while not self._stop.is_set() and generation == self._generation:
            started = time.monotonic()
            ok, frame = cap.read()
            now = time.monotonic()
            self.stats.decode_s += now - started
            if generation != self._generation:
                return
            if self.is_stream and ok and now - started >= self.watchdog_s / 2:
                ok = False  # returned only because the read timeout expired: a stale frame flushed from the decoder
            if ok:
                self._last_progress = now
                self._streaming = True
                if self.stats.state == "stalled":
                    self.stats.state = "running"
            if not ok or frame is None:
                if self._stop.is_set():
                    return
                if self.is_stream:
                    self.stats.reconnects += 1
                    self.stats.last_error = "stream ended or read failed"
                    log.warning("camera %s: read failed on %s, reconnecting", self.camera_id, self.reading)
                    self.stats.state = "reconnecting"
                    self._spawn_reader()
                    return
                if self.loop:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    loop_offset += index + 1
                    base_ts += (index + 1) / src_fps
                    index = -1
                    next_pick = 0.0
                    continue
                with self._cond:
                    self._ended = True
                    self._cond.notify_all()
                self.stats.state = "ended"
                return
            index += 1
            self.stats.frames_read += 1
            if self.is_stream:
                if not pacer.take(now):
                    continue  # frame-rate control on arrival times: this frame is not one we process
                ts = time.time()
            else:
                if index + 1e-9 < next_pick:
                    continue  # frame-rate control: this source frame is not one we process
                next_pick += step
                ts = base_ts + index / src_fps
            if self.playback == "realtime" and not self.is_stream:
                delay = (ts - self._start_ts) - (time.monotonic() - wall0)
                if delay > 0 and self._stop.wait(delay):
                    return
            frame = fit_width(frame, self.max_width)
            h, w = frame.shape[:2]
            meta = FrameMeta(self.camera_id, self._seq, index + loop_offset, ts, w, h)
            self._seq += 1
            self._put(frame, meta)

    def _read_live(self, cap: cv2.VideoCapture, generation: int, src_fps: float, n_frames: int) -> None:
        """Files played as a live camera: frame ``floor(t * fps) mod n`` at UTC time ``t``, looping.

        Both workstations compute the same position from the clock alone, so they see the same frame at the same
        moment, and the frame's timestamp is the time it is scheduled for.
        """
        pos = -1  # index of the last frame read in the file
        step = src_fps / min(self.target_fps or src_fps, src_fps)
        next_pick = first_pick(time.time(), src_fps, step)
        while not self._stop.is_set() and generation == self._generation:
            absolute = math.ceil(next_pick)
            delay = absolute / src_fps - time.time()
            if delay > 0 and self._stop.wait(delay):
                return
            pos = seek_to(cap, pos, absolute % n_frames)
            ok, frame = cap.read()
            self._last_progress = time.monotonic()
            if generation != self._generation:
                return
            if not ok or frame is None:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                pos = -1
                next_pick += step
                continue
            pos += 1
            self.stats.frames_read += 1
            late = time.time() * src_fps - absolute
            if late > n_frames / 2:  # fell far behind (suspended): jump to now
                next_pick = first_pick(time.time(), src_fps, step) - step
            next_pick += step
            frame = fit_width(frame, self.max_width)
            h, w = frame.shape[:2]
            meta = FrameMeta(self.camera_id, self._seq, absolute, absolute / src_fps, w, h)
            self._seq += 1
            self._put(frame, meta)

    def _put(self, frame: np.ndarray, meta: FrameMeta) -> None:
        with self._cond:
            if self.playback == "fast" and not self.is_stream:
                while len(self._queue) >= self._queue_size and not self._stop.is_set():
                    self._cond.wait(0.5)
                    self._last_progress = time.monotonic()
            while len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.stats.frames_dropped += 1
            self._queue.append((frame, meta))
            self._cond.notify_all()


class StreamPacer:
    """Which frames of a live stream to process at ``fps``, from their arrival times alone.

    A stream's declared frame rate cannot be trusted: MJPEG over HTTP declares none (FFmpeg reports 25 whatever the
    camera sends), and cameras lower their rate in the dark. Picking every n-th frame from the declared rate would
    process a 10 frames/s MJPEG camera configured at 5 at 2. A frame is taken once its arrival reaches the next due
    time, less half the measured interval between arrivals (the source's jitter does not halve the rate; the
    interval is measured up to one ``1/fps``, so that neither a stall nor frames that came together move it far).
    Frames that come late and together (a read delayed by a busy core, a network hiccup) are taken until the
    schedule is caught up, within :data:`CATCH_UP_S`: they are frames of the camera, and a camera read at its own
    rate keeps them all; a source that stalls longer earns no burst afterwards. ``fps`` None takes every frame.
    """

    CATCH_UP_S = 1.0
    """How late the schedule may fall behind and still be caught up (a longer stall starts it again from now)."""

    def __init__(self, fps: float | None) -> None:
        self.interval = 1.0 / fps if fps else 0.0
        self._due: float | None = None
        self._last: float | None = None
        self.arrival_s = 0.0  # smoothed time between arrivals, at most one interval (0 until two frames came)

    def take(self, now: float) -> bool:
        """Whether the frame that arrived at ``now`` (monotonic seconds) is processed."""
        if not self.interval:
            return True
        if self._last is not None:
            gap = min(max(now - self._last, 0.0), self.interval)  # a stall or a pair does not move it far
            self.arrival_s = 0.8 * self.arrival_s + 0.2 * gap if self.arrival_s else gap
        self._last = now
        if self._due is not None and now < self._due - 0.5 * self.arrival_s:
            return False
        # On schedule or behind it by less than the catch-up window: keep the phase. Later: start again from now.
        on_time = self._due is not None and now - self._due < max(self.interval, self.CATCH_UP_S)
        self._due = (self._due if on_time and self._due is not None else now) + self.interval
        return True


class _Abandon(Exception):
    """The reader generation was replaced or the capture stopped while connecting."""


def frame_interval(fps: float) -> float:
    return 1.0 / fps if fps > 0 and math.isfinite(fps) else 0.1


SEEK_FRAMES = 50


def fit_width(frame: np.ndarray, max_width: int) -> np.ndarray:
    """``frame`` scaled down to ``max_width`` pixels wide, its aspect kept (area averaging), when it is wider."""
    h, w = frame.shape[:2]
    if max_width <= 0 or w <= max_width:
        return frame
    return cv2.resize(frame, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)


def reader_backoff(failures_in_a_row: int) -> float:
    """Seconds before a reader that failed ``failures_in_a_row`` times in a row opens its source again."""
    return min(30.0, 0.5 * 2 ** min(max(failures_in_a_row, 1) - 1, 6))


def first_pick(now: float, src_fps: float, step: float) -> float:
    """The first frame (a position on the grid of every ``step`` source frames) a file played live delivers when it
    starts at UTC time ``now``: the first one scheduled at or after ``now``, as a camera only sends frames after one
    connects. Both workstations share the grid, so a camera that moves never has a frame delivered on both: the
    new owner starts after the old one stopped, hence on a later grid point (the one before ``now`` was the old
    owner's to process, and a failover drill would count it as double running)."""
    return math.ceil(now * src_fps / step - 1e-9) * step


"""Frames ahead past which a file played live is sought (one decode from the keyframe before) instead of grabbed
frame by frame: a camera that starts mid-file (a takeover: the position comes from the clock) decoded up to the whole
file first, 1 s for vtest.avi's 795 frames on a 2-core machine, 0.1-0.26 s sought."""


def seek_to(cap: cv2.VideoCapture, pos: int, want: int) -> int:
    """Place ``cap`` (its last frame read at index ``pos``, -1 for none) so that its next read is frame ``want``;
    returns the new ``pos`` (``want - 1``, or less when the file ended first). Near frames are grabbed, far ones
    sought; a seek the backend refuses falls back to grabbing."""
    if want <= pos:
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        pos = -1
    if want - pos > SEEK_FRAMES and cap.set(cv2.CAP_PROP_POS_FRAMES, want):
        return want - 1
    while pos + 1 < want:
        if not cap.grab():
            break
        pos += 1
    return pos
