"""A node's health as a measured fact: probes, one verdict with reasons, and hysteresis.

Each evaluation (every ``cluster.health.period_s``, in the node's own ``health`` thread, never in the HA tick, so a
slow probe cannot delay a lease renewal) runs these probes; each returns a :class:`Probe` with a one-line reason:

- **inference**: the inference actor answers a probe frame within ``inference_deadline_s`` (one probe in flight at a
  time: a hung actor is not sent a pile of them);
- **camera:<id>**, for each camera the node runs: it processed a frame within ``camera_stale_s`` (a camera still
  starting, without a first frame, is reported only: opening a source is slow on a loaded machine). A camera whose
  *source* fails (capture stalled, reconnecting or unreachable, or ended) is not the node's fault: it is reported and
  listed in ``failing`` (so that the leader can move that camera alone, see :mod:`failover.decide`), never counted;
- **disk**: a small file can be written, fsynced and removed in the data dir, and its filesystem keeps
  ``min_free_bytes`` free;
- **replication**: the link to the peer is up. Reported only: a broken link is symmetric (either end could be at
  fault), and counting it would make both nodes unhealthy at once;
- **clock**: the wall-clock offset to the peer (from the ``wall`` field of its member key) is within
  ``max_clock_offset_s``. Counted only when this node's own wall clock stepped since start (the wall clock minus the
  monotonic clock moved by more than the bound): with two nodes only, an offset alone does not say which is wrong.

The node is *healthy now* when every counted probe passes. :class:`Hysteresis` turns that into the verdict the node
publishes: ``bad_ticks`` consecutive bad evaluations to become unhealthy, ``good_ticks`` consecutive good ones to be
healthy again, so a flapping probe does not bounce cameras. A camera's source failure goes through the same kind of
hysteresis (``bad_ticks`` to be listed as failing) and is remembered for :data:`FAILING_MEMORY_S` after the node
stopped the camera, so a camera failing from both nodes does not bounce between them.

:class:`HealthMonitor` holds the state; its I/O edges (the inference probe, the camera statuses, the replication
status, the peer's member key, the clocks) are plain callables, replaced by in-memory fakes in unit tests.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failover.loop import HealthReport

log = logging.getLogger(__name__)

FAILING_MEMORY_S = 120.0
"""How long a node keeps listing a camera as failing at its source after it last saw it fail (it no longer runs it
once the camera moved): long enough that a camera failing from both nodes does not bounce back at once."""

SOURCE_FAILING_STATES = frozenset({"stalled", "reconnecting", "unreachable", "ended"})
"""Camera states that say the source fails, not the node."""

PROBE_FILE = ".health-probe"


@dataclass(frozen=True)
class Probe:
    """One probe's result. ``counts``: False for what is reported but never held against the node."""

    name: str
    ok: bool
    reason: str = ""
    counts: bool = True


@dataclass(frozen=True)
class Verdict:
    """One evaluation: the probes, whether the node is healthy now, and the published (hysteresis) verdict."""

    probes: tuple[Probe, ...]
    ok_now: bool
    healthy: bool
    failing: tuple[str, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """Counted failures first, then what is reported only (marked so)."""
        bad = [p.reason for p in self.probes if not p.ok and p.counts]
        noted = [f"{p.reason} (reported, not counted)" for p in self.probes if not p.ok and not p.counts]
        return tuple(bad + noted)

    def report(self) -> HealthReport:
        return HealthReport(self.healthy, self.reasons, self.failing)

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "ok_now": self.ok_now,
            "reasons": list(self.reasons),
            "failing": list(self.failing),
            "probes": {p.name: {"ok": p.ok, "counts": p.counts, "reason": p.reason} for p in self.probes},
        }


class Hysteresis:
    """Turn bad on ``bad`` bad results among the last ``2 x bad - 1`` (so a probe failing two ticks in three is a
    sick node, not a flapping one to ignore; one bad result among good ones is not); turn good again on ``good``
    consecutive good ones, doubled for every other time it turned bad within the last ``memory`` ticks (at most 64
    times): a fault that leaves with the cameras (an inference slow under their load) makes them come back later
    and later instead of bouncing every few seconds."""

    def __init__(self, bad: int, good: int, state: bool = True, memory: int = 7200) -> None:
        if bad < 1 or good < 1:
            raise ValueError(f"hysteresis needs at least 1 tick each way, got bad={bad} good={good}")
        self.bad, self.good, self.memory = bad, good, memory
        self.state = state
        self.streak = 0  # consecutive good results while bad
        self.recent: deque[bool] = deque(maxlen=2 * bad - 1)  # the last results while good
        self.ticks = 0
        self.turns: deque[int] = deque()  # the ticks at which it turned bad, within ``memory``

    def needed_good(self) -> int:
        """Good results in a row it takes now to turn good again."""
        while self.turns and self.ticks - self.turns[0] > self.memory:
            self.turns.popleft()
        return self.good * 2 ** min(max(len(self.turns) - 1, 0), 6)

    def update(self, ok: bool) -> bool:
        self.ticks += 1
        if self.state:
            self.recent.append(ok)
            if sum(1 for r in self.recent if not r) >= self.bad:
                self.state = False
                self.streak = 0
                self.recent.clear()
                self.turns.append(self.ticks)
            return self.state
        self.streak = self.streak + 1 if ok else 0
        if self.streak >= self.needed_good():
            self.state = True
            self.streak = 0
        return self.state


# -- the probes (pure) ---------------------------------------------------------------------------------------------


def probe_inference(latency_s: float | None, error: str, deadline_s: float) -> Probe:
    """``latency_s``: how long the probe frame took (None: no answer yet); ``error``: what it raised."""
    if error:
        return Probe("inference", False, f"inference failed on a probe frame: {error}")
    if latency_s is None or latency_s > deadline_s:
        waited = "no answer" if latency_s is None else f"answered after {latency_s:.1f}s"
        return Probe("inference", False, f"inference: {waited} to a probe frame (deadline {deadline_s:g}s)")
    return Probe("inference", True, f"inference answered in {latency_s:.3f}s")


def probe_camera(camera: str, status: Mapping[str, Any], idle_s: float, stale_s: float) -> Probe:
    """``idle_s``: seconds since the camera last processed a frame (or since this node started running it)."""
    state = str(status.get("state", ""))
    capture = status.get("capture")
    if state == "ended" and isinstance(capture, Mapping) and capture.get("state") not in SOURCE_FAILING_STATES:
        error = str(status.get("error") or "")
        return Probe(f"camera:{camera}", False, f"{camera}: pipeline ended: {error or 'no error given'}")
    if state in SOURCE_FAILING_STATES:
        error = str(status.get("error") or "")
        detail = f": {error}" if error else ""
        return Probe(f"camera:{camera}", False, f"{camera}: source {state}{detail}", counts=False)
    if state == "fenced":
        return Probe(f"camera:{camera}", False, f"{camera}: paused on its fence", counts=False)
    if state in ("starting", "") and not status.get("first_frame_at"):
        # Opening its source and warming up (slow on a loaded machine): a hung inference shows in its own probe.
        if idle_s > stale_s:
            return Probe(f"camera:{camera}", False, f"{camera}: starting, no frame yet after {idle_s:.1f}s", False)
        return Probe(f"camera:{camera}", True, f"{camera}: starting")
    if idle_s > stale_s:
        return Probe(
            f"camera:{camera}",
            False,
            f"{camera}: no frame processed for {idle_s:.1f}s (state {state or 'unknown'}; limit {stale_s:g}s)",
        )
    return Probe(f"camera:{camera}", True, f"{camera}: processing")


def probe_disk(writable_error: str, free_bytes: int | None, min_free_bytes: int) -> Probe:
    if writable_error:
        return Probe("disk", False, f"data dir not writable: {writable_error}")
    if free_bytes is not None and free_bytes < min_free_bytes:
        return Probe(
            "disk", False, f"data dir has {_size(free_bytes)} free, less than the minimum {_size(min_free_bytes)}"
        )
    if free_bytes is None:
        return Probe("disk", True, "data dir writable, free space unknown")
    return Probe("disk", True, f"data dir writable, {_size(free_bytes)} free")


def probe_replication(peer: str, connected: bool | None, error: str) -> Probe:
    if connected is None:
        return Probe("replication", True, "replication: no peer configured", counts=False)
    if connected:
        return Probe("replication", True, f"replication to {peer} connected", counts=False)
    detail = f": {error}" if error else ""
    return Probe("replication", False, f"replication to {peer} down{detail}", counts=False)


def probe_clock(
    peer: str, offset_s: float | None, stepped_s: float, bound_s: float, synced: bool | None = None
) -> Probe:
    """``offset_s``: our wall clock minus the peer's (None: unknown); ``stepped_s``: how far our own wall clock
    moved against the monotonic clock since start; ``synced``: the host's time synchronisation says the clock is
    synchronised (None: it cannot tell). A step with no peer to compare is confirmed only by the time
    synchronisation: otherwise the probe fails (reported, not counted) and the camera workers, paused by the step,
    stay paused rather than stamp hours of windows with a wrong time."""
    stepped = abs(stepped_s) > bound_s
    if offset_s is None and stepped and synced is not True:
        return Probe(
            "clock",
            False,
            f"wall clock stepped by {stepped_s:+.1f}s and neither a peer nor time synchronisation confirms the new"
            " time: the cameras stay paused until one does (check the clock: timedatectl)",
            counts=False,
        )
    if offset_s is None or abs(offset_s) <= bound_s:
        if stepped:
            return Probe("clock", True, f"wall clock stepped by {stepped_s:+.1f}s since start", counts=False)
        return Probe("clock", True, "clock offset to the peer within bounds" if offset_s is not None else "")
    return Probe(
        "clock",
        False,
        f"clock offset to {peer} {offset_s:+.1f}s (bound {bound_s:g}s)"
        + (f"; this node's wall clock stepped by {stepped_s:+.1f}s" if stepped else ""),
        counts=stepped,
    )


def time_synced() -> bool | None:
    """``timedatectl``'s NTPSynchronized (the kernel's synchronised flag, set by systemd-timesyncd or chrony); None
    when it cannot tell (no systemd, a container)."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"yes": True, "no": False}.get(out.stdout.strip())


def disk_state(data_dir: Path) -> tuple[str, int | None]:
    """(why the data dir cannot be written, "" when it can; free bytes of its filesystem, None if unknown)."""
    error = ""
    path = Path(data_dir) / PROBE_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"edgepair health probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc.strerror or exc}"
    try:
        free: int | None = shutil.disk_usage(data_dir).free
    except OSError:
        free = None
    return error, free


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


# -- the monitor ---------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    period_s: float = 0.5
    bad_ticks: int = 3
    good_ticks: int = 10
    inference_deadline_s: float = 3.0
    camera_stale_s: float = 5.0
    min_free_bytes: int = 256 * 1024 * 1024
    max_clock_offset_s: float = 5.0

    @classmethod
    def from_config(cls, cfg: Any) -> Settings:
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__})


@dataclass
class Sources:
    """The monitor's I/O edges. Each is called once an evaluation and may raise (the probe then fails)."""

    inference: Callable[[float], tuple[float | None, str]]  # (deadline) -> (latency or None, error)
    cameras: Callable[[], dict[str, dict[str, Any]]]  # statuses of the cameras this node runs
    disk: Callable[[], tuple[str, int | None]]
    replication: Callable[[], tuple[str, bool | None, str]]  # (peer, connected or None without peer, last error)
    peer_wall: Callable[[], tuple[str, float | None]]  # (peer, its wall clock now as we estimate it, None unknown)
    time_synced: Callable[[], bool | None] = lambda: None  # the host's time synchronisation (asked after a step only)
    wall: Callable[[], float] = lambda: time.time()  # looked up at each call (the clock-jump drill's hook)
    monotonic: Callable[[], float] = time.monotonic


@dataclass
class _Camera:
    frames: int = -1
    progress_at: float = 0.0
    source_bad: int = 0  # consecutive evaluations with the source failing
    failing_until: float = float("-inf")


class HealthMonitor:
    """Evaluates the probes and keeps the hysteresis; :meth:`report` is what the HA loop reads each tick."""

    def __init__(self, node: str, settings: Settings, sources: Sources) -> None:
        self.node = node
        self.settings = settings
        self.sources = sources
        memory = max(1, round(3600.0 / settings.period_s))  # an hour of evaluations
        self.hysteresis = Hysteresis(settings.bad_ticks, settings.good_ticks, state=True, memory=memory)
        self.cameras: dict[str, _Camera] = {}
        self.offset0 = sources.wall() - sources.monotonic()
        self.evaluations = 0
        self.clock_ok_at = float("-inf")  # monotonic time of the latest evaluation whose clock probe passed
        self.last: Verdict = Verdict((), True, True)
        self.lock = threading.Lock()
        self.on_change: Callable[[], None] | None = None  # called when the published verdict or failing list changes

    def report(self) -> HealthReport:
        with self.lock:
            return self.last.report()

    def verdict(self) -> Verdict:
        with self.lock:
            return self.last

    def evaluate(self) -> Verdict:
        s, src = self.settings, self.sources
        probes: list[Probe] = []
        probes.append(
            self._guard(
                "inference", lambda: probe_inference(*src.inference(s.inference_deadline_s), s.inference_deadline_s)
            )
        )
        failing: list[str] = []
        try:
            statuses = src.cameras()
        except Exception as exc:
            statuses = {}
            probes.append(Probe("cameras", False, f"camera statuses unreadable: {exc}"))
        now = src.monotonic()
        for cam, st in sorted(statuses.items()):
            try:
                probe = self._camera(cam, st, now)
            except Exception as exc:  # a status this cannot read: the camera's probe fails, the evaluation goes on
                probe = Probe(f"camera:{cam}", False, f"{cam}: status unreadable: {type(exc).__name__}: {exc}")
            probes.append(probe)
            c = self.cameras.setdefault(cam, _Camera())
            if probe.name.startswith("camera:") and not probe.ok and not probe.counts and "source" in probe.reason:
                c.source_bad += 1
                if c.source_bad >= s.bad_ticks:
                    c.failing_until = now + FAILING_MEMORY_S
            else:
                c.source_bad = 0
                if probe.ok:  # processing here again: its source works from this node
                    c.failing_until = float("-inf")
        for cam in list(self.cameras):
            if cam not in statuses:
                c = self.cameras[cam]
                c.frames, c.source_bad = -1, 0  # a restart of the camera here is a fresh start
            if self.cameras[cam].failing_until > now:
                failing.append(cam)
        probes.append(self._guard("disk", lambda: probe_disk(*src.disk(), s.min_free_bytes)))
        probes.append(self._guard("replication", lambda: probe_replication(*src.replication()), counts=False))
        clock_at = src.monotonic()
        clock = self._guard("clock", self._clock, counts=False)
        probes.append(clock)
        if clock.ok:
            self.clock_ok_at = clock_at
        ok_now = all(p.ok for p in probes if p.counts)
        healthy = self.hysteresis.update(ok_now)
        verdict = Verdict(tuple(probes), ok_now, healthy, tuple(sorted(failing)))
        with self.lock:
            if verdict.healthy != self.last.healthy:
                log.warning(
                    "node %s: health: %s: %s",
                    self.node,
                    "healthy again" if verdict.healthy else "UNHEALTHY",
                    "; ".join(verdict.reasons) or "every probe passes",
                )
            changed = (verdict.healthy, verdict.failing) != (self.last.healthy, self.last.failing)
            self.last = verdict
            self.evaluations += 1
        if changed and self.on_change is not None:
            self.on_change()  # the HA loop publishes it at once, not at its next tick
        return verdict

    def _failed(self, exc: BaseException) -> None:
        """An evaluation that raised counts as a failing one: the verdict never stays healthy on a node whose health
        cannot be computed."""
        probe = Probe("health", False, f"health evaluation failed: {type(exc).__name__}: {exc}")
        healthy = self.hysteresis.update(False)
        verdict = Verdict((probe,), False, healthy, self.last.failing)
        with self.lock:
            changed = verdict.healthy != self.last.healthy
            self.last = verdict
        if changed and self.on_change is not None:
            self.on_change()

    def _camera(self, cam: str, st: Mapping[str, Any], now: float) -> Probe:
        c = self.cameras.setdefault(cam, _Camera())
        frames = int(st.get("frames") or 0)
        if frames != c.frames:  # a new frame, or first seen running here (a grace of camera_stale_s to show one)
            c.progress_at = now
            c.frames = frames
        return probe_camera(cam, st, now - c.progress_at, self.settings.camera_stale_s)

    def _clock(self) -> Probe:
        src = self.sources
        peer, peer_wall = src.peer_wall()
        wall = src.wall()
        stepped = (wall - src.monotonic()) - self.offset0
        offset = None if peer_wall is None else wall - peer_wall
        bound = self.settings.max_clock_offset_s
        synced = src.time_synced() if offset is None and abs(stepped) > bound else None
        probe = probe_clock(peer, offset, stepped, bound, synced)
        if probe.ok and abs(stepped) > bound:
            # The step agrees with the peer, or time synchronisation made it: the new time is the reference now,
            # so a later drift of the peer is not blamed on this node's old step.
            self.offset0 = wall - src.monotonic()
        return probe

    def _guard(self, name: str, fn: Callable[[], Probe], counts: bool = True) -> Probe:
        try:
            return fn()
        except Exception as exc:
            return Probe(name, False, f"{name} probe failed: {type(exc).__name__}: {exc}", counts=counts)

    def run(self, stop: threading.Event, restarts: Callable[[], None] | None = None) -> None:
        """Evaluate every ``period_s`` until ``stop``; an evaluation that raises is logged, counted, retried."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.evaluate()
            except Exception as exc:
                if restarts is not None:
                    restarts()
                log.exception("node %s: health evaluation failed; trying again", self.node)
                self._failed(exc)
            stop.wait(max(0.05, self.settings.period_s - (time.monotonic() - started)))


@dataclass
class LoopRestarts:
    """Counts, per long-running loop, the iterations that raised and were retried (``edgepair_loop_restarts_total``)."""

    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, loop: str) -> None:
        with self.lock:
            self.counts[loop] = self.counts.get(loop, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


def backoff(failures: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Seconds to wait after ``failures`` consecutive failures of a loop: ``base_s`` doubling, at most ``cap_s``."""
    if failures <= 0:
        return 0.0
    return min(cap_s, base_s * 2 ** min(failures - 1, 16))
