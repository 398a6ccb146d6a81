"""The judgements of ``edgepair survey`` (pure: facts in, findings out; the I/O is in :mod:`cluster.survey`).

Each finding says what will not work, or what will cost more than it should, and what to change before the trip.
The thresholds are the product's own limits, not tuned on any site: the detector's measured throughput on this host
against what the cameras ask of it, the frame sizes the pipeline scales down, the config's health limits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cluster.doctor_checks import Finding, size

WIDE_PX = 1920
"""Frames wider than this (2K, 4K) cost decoding and hand-over for nothing: the detectors see 300-640 pixels."""
HEADROOM = 0.8
"""The share of the detector's measured throughput the cameras may use (the rest: tracking, writing, spikes)."""
SLOW_OPEN_S = 5.0


@dataclass(frozen=True)
class CameraFact:
    camera: str
    source: str  # redacted: no user info
    stream: bool
    opened: bool
    error: str = ""
    codec: str = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0  # what the source says
    frames: int = 0  # read during the survey
    open_s: float = 0.0
    configured_fps: float | None = None
    lens: str = "normal"  # what the config says
    views: int = 1  # detector runs per frame (a fisheye lens: its rotated views)
    circle: tuple[float, float, float] | None = None  # a fisheye image circle found in a frame (normalised)
    reads: str = ""  # a camera with a sub-stream: "main" or "sub", the stream the node will read (its rule)
    sub_of: str = ""  # this fact is the sub-stream of that camera (not a camera of its own: not in the capacity)


@dataclass(frozen=True)
class HostFact:
    cpus: int
    memory_bytes: int | None
    free_bytes: int | None
    min_free_bytes: int
    clock_synced: bool | None  # None: unknown (no timedatectl)
    providers: tuple[str, ...]  # what ONNX Runtime offers here (a GPU shows as CUDA/TensorRT/ROCm)
    model: str
    model_error: str = ""
    detect_ms: float | None = None  # median per frame, batch 1, on this host
    provider: str = ""  # the one the detector ran on


@dataclass(frozen=True)
class PortFact:
    what: str  # "etcd ws-b", "replication ws-b"
    host: str
    port: int
    reachable: bool
    rtt_ms: float | None = None
    error: str = ""


@dataclass(frozen=True)
class SurveyFacts:
    store: str
    host: str
    cameras: tuple[CameraFact, ...]
    machine: HostFact
    ports: tuple[PortFact, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def camera_rate(c: CameraFact) -> float:
    """The frame rate the camera will be processed at: its configured ``fps`` capped by the source's."""
    rate = c.fps if c.fps > 0 else 10.0
    return min(rate, c.configured_fps) if c.configured_fps else rate


def check_camera(c: CameraFact) -> list[Finding]:
    name = f"camera {c.camera}"
    if not c.opened or c.frames == 0:
        why = c.error or "no frame could be read"
        fix = (
            f"check that this host reaches {c.source} (address, port, firewall, credentials in the camera's"
            " credentials file) and that the camera streams H.264 or H.265 over RTSP, or MJPEG"
            if c.stream
            else f"check cameras[].source of {c.camera}: the file must exist and be a video OpenCV reads"
        )
        return [Finding(name, False, f"{c.source}: {why}", fix)]
    out = [
        Finding(
            name,
            True,
            f"{c.source}: {c.codec or '?'} {c.width}x{c.height} at {c.fps:g} fps, {c.frames} frames read,"
            f" opened in {c.open_s:.1f} s",
        )
    ]
    if c.reads:
        out.append(Finding(f"{name} stream", True, f"the node reads its {c.reads} stream (stream: auto's rule)"))
    if c.width > WIDE_PX and c.lens != "fisheye" and c.circle is None and c.reads != "sub" and not c.sub_of:
        out.append(
            Finding(
                f"{name} size",
                False,
                f"{c.width}x{c.height}: every frame is decoded at full size and scaled down for a detector that sees"
                " a few hundred pixels",
                f"give cameras[{c.camera}].substream the camera's sub-stream URL (most cameras serve one on a second"
                " RTSP path; the node reads it when at least runtime.substream_min_width wide)",
            )
        )
    if c.configured_fps and c.fps > 0 and c.fps < c.configured_fps:
        out.append(
            Finding(
                f"{name} rate",
                False,
                f"the source gives {c.fps:g} fps, the config asks for {c.configured_fps:g}",
                f"set cameras[{c.camera}].fps to {c.fps:g} or less, or raise the camera's frame rate",
            )
        )
    if c.stream and c.open_s > SLOW_OPEN_S:
        out.append(
            Finding(
                f"{name} open",
                False,
                f"the stream took {c.open_s:.1f} s to give its first frame: a takeover of this camera waits as long",
                "shorten the camera's key frame interval (GOP) to 1 s, or its stream's probe (runtime.stream_probe_s)",
            )
        )
    if c.circle is not None and c.lens != "fisheye":
        cx, cy, r = c.circle
        out.append(
            Finding(
                f"{name} lens",
                False,
                f"a fisheye image circle is in its frame (centre {cx:.3f}, {cy:.3f}, radius {r:.3f} of the height)"
                " but the config gives no fisheye lens: people near the edge are missed and counted in the wrong"
                " place",
                f"edgepair camera calibrate-lens --config STORE.yaml --camera {c.camera}  (and put the printed lens:"
                " block under the camera)",
            )
        )
    return out


def check_machine(h: HostFact, cameras: tuple[CameraFact, ...]) -> list[Finding]:
    out: list[Finding] = []
    if h.model_error or h.detect_ms is None:
        out.append(
            Finding(
                "detector",
                False,
                f"the detector could not run on this host: {h.model_error or 'no measure'}",
                "make model (or edgepair model install), then run the survey again",
            )
        )
    else:
        capacity = HEADROOM * 1000.0 / h.detect_ms
        # each camera once, by the stream the node reads (a main stream down: its sub-stream's row)
        reads_sub = {c.camera for c in cameras if c.reads == "sub"}
        asked = sum(
            camera_rate(c) * c.views
            for c in cameras
            if c.opened and c.frames and (c.sub_of in reads_sub if c.sub_of else c.reads != "sub")
        )
        msg = (
            f"{h.model} on {h.provider or '?'}: {h.detect_ms:.1f} ms a frame, so about"
            f" {capacity:.0f} detector runs/s for the cameras ({HEADROOM:.0%} of it); they ask {asked:g} (a fisheye"
            " frame is one run per view)"
        )
        if asked > capacity:
            out.append(
                Finding(
                    "capacity",
                    False,
                    msg,
                    "lower cameras[].fps (people counting needs 5 to 10 fps), use a lighter model, or add a"
                    " workstation (a failover puts every camera on one)",
                )
            )
        else:
            out.append(Finding("capacity", True, msg + " (one workstation carries them all after a failover)"))
    if h.free_bytes is not None and h.free_bytes < h.min_free_bytes:
        out.append(
            Finding(
                "disk",
                False,
                f"{size(h.free_bytes)} free, less than the minimum {size(h.min_free_bytes)} (cluster.health)",
                "give the data dir a larger disk, or lower storage.retention_days",
            )
        )
    else:
        free = "unknown" if h.free_bytes is None else size(h.free_bytes)
        out.append(Finding("disk", True, f"{free} free"))
    if h.clock_synced is False:
        out.append(
            Finding(
                "clock",
                False,
                "the system clock is not synchronised (timedatectl: NTPSynchronized=no): the pair refuses a peer whose"
                " clock is off",
                "point systemd-timesyncd or chrony at the store's NTP server: timedatectl set-ntp true",
            )
        )
    else:
        out.append(Finding("clock", True, "synchronised" if h.clock_synced else "synchronisation unknown"))
    return out


def check_port(p: PortFact) -> Finding:
    where = p.what if f"{p.host}:{p.port}" in p.what else f"{p.what} ({p.host}:{p.port})"
    if p.reachable:
        return Finding(f"network {p.what}", True, f"{where} reachable in {p.rtt_ms:.1f} ms")
    return Finding(
        f"network {p.what}",
        False,
        f"{where} not reachable: {p.error or 'no answer'}",
        f"open TCP {p.port} between the store's workstations (and the witness) on the store network; check that"
        " the service runs there",
    )


def diagnose(facts: SurveyFacts) -> list[Finding]:
    out: list[Finding] = []
    for c in facts.cameras:
        out.extend(check_camera(c))
    out.extend(check_machine(facts.machine, facts.cameras))
    out.extend(check_port(p) for p in facts.ports)
    return out
