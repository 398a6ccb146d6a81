"""The store config: one YAML file per store, strictly validated (after Frigate).

Unknown keys are rejected, every field has a description, cross-field rules live in model validators, and
``load_config`` reports every error with its YAML location (``store.yaml:12:7: cameras[0].lines[1].start: ...``).
Coordinates of lines and zones are normalised to the frame: 0..1 from left to right and top to bottom.

Every value is bounded, so that what validates also runs: no inf or nan anywhere, an upper bound (with its reason in
the description) on every number, list and string, times as HH:MM, simple polygons, known URL schemes.

Secrets are not part of the config: a camera's user and password come from the credentials file or the environment
(``cluster.credentials``). A URL written with ``user:password@`` still works, but the loader strips the user info
from ``source`` at once (keeping it apart, out of dumps, reprs and ``version()``) and ``warnings`` says to move it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cluster.config_checks import (
    HOST,
    MAX_PATH,
    Point,
    check_source,
    endpoint_problem,
    fold_back,
    self_intersection,
)
from cluster.credentials import CredentialSource, env_names, load_credentials_file
from cluster.errors import ConfigError
from cluster.lens_config import LensConfig
from cluster.redact import redact, register_secret, secret_params, split_userinfo

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger(__name__)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def _err(message: str, *at: str | int) -> PydanticCustomError:
    """A validation error ``at`` a key below the model that raises it, so the loader gives that key's YAML line."""
    return PydanticCustomError("edgepair", "{message}", {"message": message, "at": at})


def _check_path(p: Path) -> Path:
    text = str(p)
    if "\x00" in text or len(text) > MAX_PATH:
        raise ValueError(f"not a usable path: at most {MAX_PATH} characters, no NUL byte")
    return p


SafePath = Annotated[Path, AfterValidator(_check_path)]


RUNTIME_DEFAULT_MAX_WIDTH = 1920
"""``runtime.max_frame_width`` by default (left out of the config version at that value)."""
RUNTIME_DEFAULT_SUBSTREAM_WIDTH = 640
"""``runtime.substream_min_width`` by default (left out of the config version at that value)."""


class Strict(BaseModel):
    # allow_inf_nan=False: an infinite or nan float is refused everywhere (a watchdog of .inf never fires).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_point(p: Point, what: str) -> Point:
    x, y = p
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"{what} {list(p)} is outside the frame: coordinates are normalised, 0..1")
    return p


class StoreConfig(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Store identifier, the same in every copy of its data.")
    timezone: str = Field(
        max_length=64,
        description="IANA time zone of the store, e.g. Europe/London; every KPI is local time. At most 64 characters"
        " (the longest IANA name has 32).",
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as Europe/London") from exc
        # Names Python's zoneinfo reads from the system but DuckDB (every KPI) does not know, or that mean another
        # zone on each workstation (``localtime``): refused here rather than in every query.
        if v in ("localtime", "posixrules", "Factory") or v.startswith(("posix/", "right/")):
            raise ValueError(f"time zone {v!r} is a system alias, not an IANA zone: use one such as Europe/London")
        return v


class ModelConfig(Strict):
    path: SafePath | None = Field(
        default=None, description="ONNX detector; default: the model installed by `edgepair model install`."
    )
    family: Literal["auto", "ssd", "gfl", "yolox", "yolov8"] = Field(
        default="auto", description="Decoder family; auto detects it from the model's inputs and outputs."
    )
    threshold: float | None = Field(default=None, gt=0, lt=1, description="Score threshold; default per family.")
    tiles: int = Field(default=1, ge=1, le=4, description="Overlapping vertical strips the frame is cut into.")
    threads: int = Field(default=0, ge=0, le=64, description="ONNX Runtime intra-op threads; 0 = all cores.")


class LineConfig(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Line identifier, e.g. entrance.")
    start: Point = Field(description="First end of the line segment, normalised [x, y].")
    end: Point = Field(description="Second end of the line segment, normalised [x, y].")
    in_point: Point = Field(description="Any point on the inside: moving towards its side of the line is 'in'.")
    kind: Literal["entrance", "pass_by", "internal"] = Field(
        default="entrance", description="entrance counts visitors; pass_by counts passers-by outside the door."
    )
    hysteresis: float = Field(default=0.02, ge=0, le=0.2, description="Dead band around the line, normalised.")

    @model_validator(mode="after")
    def _geometry(self) -> LineConfig:
        for name in ("start", "end", "in_point"):
            _check_point(getattr(self, name), f"line {self.id}: {name}")
        (x1, y1), (x2, y2), (px, py) = self.start, self.end, self.in_point
        if abs(x2 - x1) + abs(y2 - y1) < 1e-3:
            raise ValueError(f"line {self.id}: start and end are the same point")
        cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
        if abs(cross) < 1e-6:
            raise ValueError(f"line {self.id}: in_point lies on the line; put it on the inside of the store")
        return self


class ZoneConfig(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Zone identifier, e.g. checkout.")
    polygon: list[Point] = Field(
        min_length=3,
        max_length=256,
        description="Polygon vertices, normalised [x, y], 3 to 256 (a simple polygon: its edges never cross; more"
        " vertices than 256 are more precision than a CCTV frame has, and cost every frame).",
    )
    min_dwell_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="Visits shorter than this are not KPI visits. At most 3600 s: a longer minimum leaves no visit"
        " to count in a store.",
    )
    exit_grace_s: float = Field(
        default=1.0,
        ge=0,
        le=300,
        description="Absence shorter than this does not end a visit. At most 300 s: longer, a person who left and"
        " came back later is one visit, and the zone keeps every absent track that long.",
    )

    @model_validator(mode="after")
    def _geometry(self) -> ZoneConfig:
        for i, p in enumerate(self.polygon):
            _check_point(p, f"zone {self.id}: vertex {i}")
        pts = self.polygon
        problem = self_intersection(pts)
        if problem:
            raise _err(f"zone {self.id}: the polygon is not simple, {problem}: list the vertices in order", "polygon")
        area = 0.5 * abs(sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(pts, pts[1:] + pts[:1], strict=True)))
        if area < 1e-6:
            raise ValueError(f"zone {self.id}: the polygon has no area")
        problem = fold_back(pts)
        if problem:
            raise _err(f"zone {self.id}: the polygon is not simple, {problem}: list the vertices in order", "polygon")
        return self


class CameraConfig(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Camera identifier, e.g. cam-1.")
    source: str = Field(
        max_length=MAX_PATH,
        description="Video file path, or an rtsp://, rtsps://, http:// or https:// URL (at most 4096 characters)."
        " No user or password here: they go in the credentials file (credentials_file:) or the environment; user"
        " info written in the URL still works, with a warning, and is stripped from the URL when it is loaded.",
    )
    substream: str | None = Field(
        default=None,
        max_length=MAX_PATH,
        description="Streams only: the camera's second, smaller stream (rtsp://, rtsps://, http://, https://), read"
        " with the same user and password. Used instead of source (the main stream) when it is at least"
        " runtime.substream_min_width pixels wide (stream: auto): decoding a 4K main stream costs a core, and the"
        " detector looks at a few hundred pixels. No user or password here.",
    )
    stream: Literal["auto", "main", "sub"] = Field(
        default="auto",
        description="Which stream to read: auto (the sub-stream when it is wide enough and opens, else the main"
        " one; a fisheye camera reads its main stream), main, or sub (the sub-stream only).",
    )
    fps: float | None = Field(default=None, gt=0, le=60, description="Frames a second to process; default: source.")
    playback: Literal["realtime", "fast", "live"] = Field(
        default="realtime",
        description="Files only: realtime paces at fps; fast reads as fast as inference goes (no drops); "
        "live follows the wall clock (both workstations see the same frame at the same moment).",
    )
    loop: bool = Field(default=False, description="Files only: start again at the end.")
    anchor: Literal["bottom_center", "center"] = Field(
        default="bottom_center", description="Point of a box counted; a fisheye camera's default is center."
    )
    lens: LensConfig | None = Field(
        default=None, description="The lens: a ceiling fisheye is detected in rotated views (cluster/lens_config.py)."
    )
    lines: list[LineConfig] = Field(
        default_factory=list,
        max_length=32,
        description="Counting lines, at most 32 (every line is tested against every track at every frame).",
    )
    zones: list[ZoneConfig] = Field(
        default_factory=list,
        max_length=32,
        description="Dwell zones, at most 32 (every zone is tested against every track at every frame).",
    )
    # The user info a careless installer wrote into ``source`` (stripped from it): never dumped, hashed or shown.
    _url_userinfo: str | None = PrivateAttr(default=None)

    @property
    def is_stream(self) -> bool:
        return bool(re.match(r"^(rtsp|rtsps|http|https)://", self.source))

    @property
    def has_url_credentials(self) -> bool:
        """True when the YAML wrote a user (and password) into the URL: they belong in the credentials file."""
        return self._url_userinfo is not None

    @model_validator(mode="wrap")
    @classmethod
    def _split_credentials(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> CameraConfig:
        userinfo = None
        if isinstance(data, dict) and "source" in data and not isinstance(data["source"], str):
            # Bytes (a YAML !!binary) would be turned into text after the user info is split off: never accepted.
            raise ValueError(
                f"camera {str(data.get('id'))[:64]}: source must be text (a file path or a stream URL),"
                f" not {type(data['source']).__name__}"
            )
        if isinstance(data, dict) and isinstance(data.get("source"), str):
            for value in secret_params(data["source"]):  # masked wherever the URL is shown
                register_secret(value)
            bare, userinfo = split_userinfo(data["source"])
            if userinfo is not None:
                register_secret(userinfo.partition(":")[2])
                data = {**data, "source": bare}
        data = _fisheye_anchor(data)
        cam: CameraConfig = handler(data)
        if userinfo is not None:
            cam._url_userinfo = userinfo
        return cam

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return check_source(v)

    @field_validator("substream")
    @classmethod
    def _substream(cls, v: str | None) -> str | None:
        if v is None:
            return v
        for value in secret_params(v):  # masked wherever the URL is shown
            register_secret(value)
        bare, userinfo = split_userinfo(v)
        if userinfo is not None:
            register_secret(userinfo.partition(":")[2])
            raise ValueError(
                "substream: no user or password in the URL: the sub-stream is read with the camera's, from the"
                " credentials file or the environment"
            )
        checked = check_source(bare)
        if not re.match(r"^(rtsp|rtsps|http|https)://", checked):
            raise ValueError("substream must be a stream URL (rtsp://, rtsps://, http://, https://), not a file path")
        return checked

    @model_validator(mode="after")
    def _unique(self) -> CameraConfig:
        for what, items in (("line", self.lines), ("zone", self.zones)):
            ids = [i.id for i in items]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"camera {self.id}: {what} ids must be unique, repeated: {', '.join(dup)}")
        if self.is_stream and (self.loop or self.playback != "realtime"):
            raise ValueError(f"camera {self.id}: loop and playback apply to video files, not to streams")
        if self.substream is not None and not self.is_stream:
            raise ValueError(f"camera {self.id}: substream applies to a stream: source is a video file")
        if self.stream == "sub" and self.substream is None:
            raise ValueError(f"camera {self.id}: stream: sub needs a substream URL; or write stream: auto")
        return self

    def stream_choice(self) -> str:
        """``stream`` as the capture applies it: a fisheye lens's views are crops of the frame, which need the main
        stream's pixels, so auto reads a fisheye camera's main stream; without a sub-stream, main."""
        if self.substream is None:
            return "main"
        if self.stream == "auto" and self.lens is not None and self.lens.is_fisheye:
            return "main"
        return self.stream


def _fisheye_anchor(data: Any) -> Any:
    """A fisheye camera counts box centres: ``anchor`` defaults to center there, and bottom_center is refused."""
    if not isinstance(data, dict) or not isinstance(data.get("lens"), dict) or data["lens"].get("type") != "fisheye":
        return data
    if "anchor" not in data:
        return {**data, "anchor": "center"}
    if data["anchor"] == "bottom_center":
        raise _err(
            f"camera {str(data.get('id'))[:64]}: anchor bottom_center means the feet of an upright person, which a"
            " ceiling fisheye does not show at the bottom of a box: use anchor: center (a fisheye lens's default)",
            "anchor",
        )
    return data


class TrackingConfig(Strict):
    """Scores and IoUs of the tracker (``actors.tracking.TrackerConfig``): each in (0, 1), low <= high <= new."""

    high_thresh: float = Field(default=0.5, gt=0, lt=1, description="Detections above are first-stage matches.")
    low_thresh: float = Field(default=0.1, gt=0, lt=1, description="Detections above are second-stage matches.")
    new_track_thresh: float = Field(default=0.6, gt=0, lt=1, description="Score needed to start a track.")
    match_iou: float = Field(
        default=0.1, gt=0, lt=1, description="Minimum IoU (times the score), first association; 0.1 suits 5-10 fps."
    )
    second_match_iou: float = Field(default=0.5, gt=0, lt=1, description="Minimum IoU, second association.")
    min_hits: int = Field(default=3, ge=1, le=30, description="Frames before a track is confirmed and counted.")
    max_lost_s: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Seconds a lost track is kept for re-matching. At most 60: longer, another person is matched to"
        " an old track.",
    )

    @model_validator(mode="after")
    def _order(self) -> TrackingConfig:
        # The tracker's rules (actors/tracking.py): the second association takes scores in [low, high), and only a
        # detection at or above high_thresh can start a track, so a new_track_thresh below it has no effect.
        if self.low_thresh > self.high_thresh:
            raise _err(
                f"low_thresh {self.low_thresh} is above high_thresh {self.high_thresh}: the second association takes"
                " scores in [low_thresh, high_thresh)",
                "low_thresh",
            )
        if self.new_track_thresh < self.high_thresh:
            raise _err(
                f"new_track_thresh {self.new_track_thresh} is below high_thresh {self.high_thresh}: only detections"
                " at or above high_thresh start tracks; raise it to at least high_thresh",
                "new_track_thresh",
            )
        return self


class StorageConfig(Strict):
    data_dir: SafePath = Field(
        default=Path("data"), description="Where segments are written (relative: to the config)."
    )
    flush_interval_s: float = Field(
        default=1.0,
        ge=0.1,
        le=60,
        description="Seconds covered by one segment. 0.1 to 60: shorter makes a file per frame, longer delays"
        " replication and the views by as much.",
    )
    retention_days: int = Field(
        default=400,
        ge=1,
        le=3650,
        description="Days of data kept. At most 3650 (ten years): longer than any retention a store needs, and date"
        " arithmetic on the cut-off overflows far beyond it (1000000 days did).",
    )


class RuntimeConfig(Strict):
    num_cpus: int = Field(default=0, ge=0, le=256, description="CPUs given to the local Ray; 0 = all cores.")
    inference_batch: int = Field(default=4, ge=1, le=64, description="Most frames run in one inference call.")
    inflight: int = Field(default=2, ge=1, le=8, description="Frames per camera sent to inference ahead.")
    frame_queue: int = Field(default=2, ge=1, le=64, description="Frames a camera buffers; older ones are dropped.")
    watchdog_s: float = Field(
        default=10.0,
        ge=1,
        le=300,
        description="A source read hanging this long is reopened; half of it is the stream's open and read timeout."
        " 1 to 300 s: below 1 s no RTSP stream opens in time; above 5 minutes a hung camera goes unnoticed.",
    )
    stall_s: float = Field(
        default=2.0,
        ge=0.2,
        le=300,
        description="A stream that delivers no frame this long is reported stalled: its source fails from this node,"
        " so the camera alone can move to the other workstation (reopened after watchdog_s). 0.2 to 300 s.",
    )
    max_frame_width: int = Field(
        default=RUNTIME_DEFAULT_MAX_WIDTH,
        ge=0,
        le=16384,
        description="Frames wider than this are scaled down (aspect kept) once, as they are decoded, before tracking"
        " and the hand-over to inference: a 4K stream costs a 1080p one downstream (detectors see a few hundred"
        " pixels). 0 = never. A fisheye camera is left at its size (its views are crops of the frame). Lines and"
        " zones are normalised, so they stay where they are.",
    )
    substream_min_width: int = Field(
        default=RUNTIME_DEFAULT_SUBSTREAM_WIDTH,
        ge=16,
        le=16384,
        description="A camera's sub-stream (cameras[].substream, stream: auto) is read instead of its main stream"
        " when its frames are at least this wide. 640: the shipped detectors look at 320 (SSDLite) to 416 (PicoDet)"
        " pixels across a whole frame; with model.tiles 2 they look at about 1.7 times that: raise it to 720.",
    )
    stream_probe_s: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="Seconds of a new stream FFmpeg reads to learn its format before the first frame; 0 = FFmpeg's"
        " default (5 s: an RTSP camera took 2.8 s to open, against 0.6 s at 0.5). A stream that does not open so"
        " probed is opened with FFmpeg's default on the next attempt.",
    )


class KpiConfig(Strict):
    bounce_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Visits shorter than this are bounces. At most 3600 s: longer, nearly every visit is a bounce.",
    )
    visit_merge_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Visits of one track closer than this merge. At most 3600 s: visits an hour apart are two.",
    )
    opening_hours: tuple[str, str] = Field(
        default=("00:00", "24:00"),
        description='Local opening hours ["HH:MM", "HH:MM"], quoted; opening before closing, 24:00 allowed as the'
        " closing (hours across midnight are not supported: 00:00-24:00 for a store that never closes).",
    )

    @field_validator("opening_hours", mode="before")
    @classmethod
    def _quoted(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            for i, t in enumerate(v):
                if isinstance(t, int) and not isinstance(t, bool):
                    raise _err(
                        f'write the time quoted, "{t // 60:02d}:{t % 60:02d}": YAML reads an unquoted HH:MM'
                        f" as the number {t}",
                        i,
                    )
        return v

    @field_validator("opening_hours")
    @classmethod
    def _hours(cls, v: tuple[str, str]) -> tuple[str, str]:
        for i, t in enumerate(v):
            if not (_HHMM.match(t) or (i == 1 and t == "24:00")):
                allowed = "00:00 to 24:00" if i == 1 else "00:00 to 23:59"
                raise _err(f"{t[:16]!r} is not a time HH:MM ({allowed})", i)
        if v[0] >= v[1]:
            raise _err(f"opening {v[0]} is not before closing {v[1]} (hours across midnight are not supported)", 1)
        return v


class NodeConfig(Strict):
    name: str = Field(pattern=ID_PATTERN, description="Workstation name, e.g. ws-a.")
    host: str = Field(
        default="127.0.0.1",
        max_length=255,
        description="Address the peer uses to reach this workstation: an IP address or a DNS name (at most 253).",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not HOST.match(v):
            raise ValueError(f"{v[:64]!r} is not an IP address or host name (no scheme, port or path)")
        return v

    @model_validator(mode="after")
    def _ports(self) -> NodeConfig:
        if self.flight_port == self.metrics_port:
            raise _err(f"node {self.name}: flight_port and metrics_port are both {self.flight_port}", "metrics_port")
        return self

    flight_port: int = Field(default=8815, ge=1, le=65535, description="Arrow Flight port (segment replication).")
    metrics_port: int = Field(default=9101, ge=1, le=65535, description="Health and Prometheus metrics port.")
    capacity: int = Field(default=16, ge=1, le=256, description="Cameras this workstation can run at full rate.")


class HealthConfig(Strict):
    """How a node measures its own health (:mod:`cluster.health`) and how fast a verdict may change."""

    period_s: float = Field(
        default=0.5,
        ge=0.1,
        le=10,
        description="Seconds between two health evaluations. 0.1 to 10: faster costs CPU on a shared workstation,"
        " slower delays a gray failure's handover by bad_ticks x period_s.",
    )
    bad_ticks: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Bad evaluations among the last 2 x bad_ticks - 1 before the node calls itself unhealthy (and"
        " hands its cameras over): 3 in a row, or a probe failing two ticks in three. 1 to 20: 1 bounces cameras on a"
        " single slow probe.",
    )
    good_ticks: int = Field(
        default=10,
        ge=1,
        le=600,
        description="Consecutive good evaluations before an unhealthy node calls itself healthy again (and gets"
        " cameras back), doubled for each other time it turned unhealthy within the hour (a fault that leaves with"
        " the cameras does not bounce them). At least 1; at most 600 (a node that never comes back is a node to"
        " repair).",
    )
    inference_deadline_s: float = Field(
        default=3.0,
        ge=0.2,
        le=30,
        description="The inference actor must answer a probe frame within this (3 s: a probe answered in 2.6 s was"
        " measured on a 2-core workstation at load 40). 0.2 to 30 s: below, a busy CPU fails the probe; above, a"
        " hung GPU keeps its cameras for half a minute.",
    )
    camera_stale_s: float = Field(
        default=5.0,
        ge=1,
        le=120,
        description="A camera this node runs that processed no frame for this long (its source being fine) counts"
        " against the node. 1 to 120 s: below 1 s a GC pause or a restart counts.",
    )
    min_free_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        le=1024**4,
        description="Free bytes the data dir's filesystem must keep (default 256 MiB: several minutes of segments"
        " of 16 cameras with room for compaction). At most 1 TiB: a larger minimum marks every ordinary disk full.",
    )
    max_clock_offset_s: float = Field(
        default=5.0,
        ge=0.5,
        le=3600,
        description="Largest wall-clock offset to the peer. 0.5 to 3600 s: below 0.5 s the member key's age alone"
        " exceeds it; segments are timed by the wall clock, so an offset of minutes misplaces windows.",
    )


class ClusterConfig(Strict):
    etcd_endpoints: list[str] = Field(
        default_factory=list,
        max_length=7,
        description="Every etcd member (both workstations and the witness): https://host:port with security.tls,"
        " http://host:port without, or bare host:port. At most 7 (etcd's own advice for a cluster's size).",
    )
    ttl_s: float = Field(
        default=2.0,
        ge=1,
        le=60,
        description="Leader and member lease TTL in seconds. 1 to 60: a failover takes about this long.",
    )
    nodes: list[NodeConfig] = Field(
        default_factory=list,
        max_length=8,
        description="The workstations of the store (two). At most 8: election and assignment are built and tested for"
        " a pair.",
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="How the node measures its health (cluster.health)."
    )
    raft_leader: str | None = Field(
        default=None,
        max_length=300,
        description="The etcd member (one of etcd_endpoints, normally the witness) the leading agent keeps etcd's raft"
        " leadership on, so that a workstation's death never costs an etcd election (which extends every lease).",
    )

    @field_validator("etcd_endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        for i, e in enumerate(v):
            problem = endpoint_problem(e)
            if problem:
                raise _err(problem, i)
        return v

    @model_validator(mode="after")
    def _pair(self) -> ClusterConfig:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("cluster.nodes: names must be unique")
        if self.nodes and len(self.etcd_endpoints) < 3:
            raise ValueError("cluster.etcd_endpoints: name all 3 etcd members (a 2-member etcd survives no failure)")
        seen = [e.partition("://")[2] if "://" in e else e for e in self.etcd_endpoints]
        dup = sorted({e for e in seen if seen.count(e) > 1})
        if dup:
            raise ValueError(f"cluster.etcd_endpoints: {', '.join(dup)} listed twice: name each etcd member once")
        ports = [(n.host, p, n.name) for n in self.nodes for p in (n.flight_port, n.metrics_port)]
        for i, (host, port, name) in enumerate(ports):
            other = next((o for h, p, o in ports[:i] if (h, p) == (host, port)), None)
            if other is not None:
                raise ValueError(
                    f"cluster.nodes: {name} and {other} both listen on {host}:{port}: give each node its own ports"
                )
        if self.raft_leader is not None and self.raft_leader not in self.etcd_endpoints:
            raise ValueError(
                f"cluster.raft_leader: {self.raft_leader!r} is not one of cluster.etcd_endpoints; name the witness's"
                " endpoint exactly as it is listed there, or leave raft_leader out"
            )
        return self


class SecurityConfig(Strict):
    tls: bool = Field(
        default=True,
        description="Mutual TLS on etcd (with etcd auth), replication and /health, and signed segments. false is a"
        " plain-text opt-out for a lab on one machine, logged as a warning at every start; never on a store network.",
    )
    cert_dir: SafePath = Field(
        default=Path("pki"),
        description="Folder with the store CA bundle (ca.crt) and this host's <name>.crt and <name>.key, mode 0600"
        " (`edgepair certs`); relative: to the config file, so /etc/edgepair/store.yaml reads /etc/edgepair/pki.",
    )
    metrics: Literal["tls", "loopback"] = Field(
        default="tls",
        description="/health and /metrics: tls serves them on the node's host with mutual TLS (a Prometheus scrapes"
        " with a client certificate of the store CA); loopback serves them in plain HTTP on 127.0.0.1 only, for a"
        " local agent that scrapes and forwards.",
    )


class Config(Strict):
    store: StoreConfig
    node: str = Field(default="ws-a", pattern=ID_PATTERN, description="Name of this workstation.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    cameras: list[CameraConfig] = Field(
        min_length=1,
        max_length=64,
        description="The store's cameras, 1 to 64 (a workstation runs at most 256; a pair sized for a store runs"
        " 16 each, and etcd's assignment of more than 64 would outgrow one transaction).",
    )
    credentials_file: SafePath | None = Field(
        default=None,
        description="YAML or JSON file mapping camera id -> {user, password}, mode 0600, owned by the node's user"
        " (managed by Ansible, no_log); relative: to the config file. EDGEPAIR_CAMERA_<ID>_USER/_PASSWORD in the"
        " environment override it. Never hashed into config_version.",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    kpi: KpiConfig = Field(default_factory=KpiConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)

    def node_config(self, name: str) -> NodeConfig:
        for n in self.cluster.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.cluster.nodes) or "none"
        raise ConfigError(f"node {name!r} is not in cluster.nodes of the store config (known: {known})")

    # Warnings of the loader (with their YAML location), e.g. a password written into a camera URL.
    _warnings: tuple[str, ...] = PrivateAttr(default=())

    @property
    def warnings(self) -> tuple[str, ...]:
        """What validates but should change (``validate-config`` prints them, the loader logs them)."""
        return self._warnings

    @model_validator(mode="after")
    def _unique_cameras(self) -> Config:
        ids = [c.id for c in self.cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera ids must be unique, repeated: {', '.join(dup)}")
        # Ids that differ only in case or '-'/'_' share their credential variables (EDGEPAIR_CAMERA_<ID>_PASSWORD)
        # and, on some file systems, their folders: one camera's password would be sent to the other's host.
        folded: dict[str, str] = {}
        for i in ids:
            password_var = env_names(i)[1]
            other = folded.setdefault(password_var, i)
            if other != i:
                raise ValueError(
                    f"camera ids {other} and {i} differ only in case or '-'/'_': they would share credentials"
                    f" ({password_var}) and folders; rename one"
                )
        return self

    @model_validator(mode="after")
    def _rate_against_health(self) -> Config:
        # A camera slower than the health probe's patience makes its node look broken between two frames, and the
        # cameras move from node to node for nothing.
        stale = self.cluster.health.camera_stale_s
        for i, cam in enumerate(self.cameras):
            if cam.fps is not None and 2.0 / cam.fps > stale:
                raise _err(
                    f"camera {cam.id}: fps {cam.fps:g} is one frame every {1 / cam.fps:.3g} s, but a camera with no"
                    f" frame for cluster.health.camera_stale_s ({stale:g} s) counts against its node: use fps >="
                    f" {2 / stale:g}, or raise camera_stale_s above {2 / cam.fps:.3g}",
                    "cameras",
                    i,
                    "fps",
                )
        return self

    @model_validator(mode="after")
    def _etcd_tls(self) -> Config:
        # failover.etcd_tls refuses a plain-text endpoint with TLS on, and a TLS one with it off: say so now.
        for i, e in enumerate(self.cluster.etcd_endpoints):
            scheme = e.partition("://")[0] if "://" in e else ""
            if self.security.tls and scheme == "http":
                raise _err(
                    f"{e} is plain text but security.tls is on: write it https://, or set security.tls: false",
                    "cluster",
                    "etcd_endpoints",
                    i,
                )
            if not self.security.tls and scheme == "https":
                raise _err(
                    f"{e} needs TLS but security.tls is false: write it http://, or turn security.tls on",
                    "cluster",
                    "etcd_endpoints",
                    i,
                )
        return self

    def credential_source(self, camera_id: str) -> CredentialSource:
        """Where camera ``camera_id``'s credentials are found (resolved by the capture when it opens the stream)."""
        cam = next((c for c in self.cameras if c.id == camera_id), None)
        if cam is None:
            raise ConfigError(f"camera {camera_id!r} is not in the store config")
        return CredentialSource(camera_id, self.credentials_file, cam._url_userinfo)

    def identity(self, name: str | None = None) -> Identity | None:
        """This host's TLS identity from ``security.cert_dir`` (None when ``security.tls`` is off), checked now."""
        if not self.security.tls:
            return None
        from cluster.pki import Identity

        return Identity.load(self.security.cert_dir, name or self.node)

    def version(self) -> str:
        """A short hash of the validated config without its secrets, stored with every event.

        No secret is hashed: camera URLs are hashed without user info (the loader strips it) and the credentials
        file's path is left out, as is ``security`` (where the certificates are, whether TLS is on). None of these
        change what a camera counts, so none of them changes the version: a password rotated, moved from the URL
        to the credentials file, or TLS turned on gives the same version. Leaving them out also keeps the version
        of a config without secrets exactly what it was before these keys existed, so rows written before and after
        an upgrade, under the same store config, carry the same version (``test_version_is_stable`` pins it).
        ``cluster.health`` (how a node measures its health) and ``runtime.stall_s`` / ``runtime.stream_probe_s``
        (when a silent stream is reported, how long a stream is probed at its opening) are left out for the same reason,
        and ``runtime.max_frame_width`` at its default.
        """
        runtime = {"stall_s", "stream_probe_s"}
        if self.runtime.max_frame_width == RUNTIME_DEFAULT_MAX_WIDTH:  # hashed as before the key existed
            runtime.add("max_frame_width")
        if self.runtime.substream_min_width == RUNTIME_DEFAULT_SUBSTREAM_WIDTH:
            runtime.add("substream_min_width")
        exclude: dict[str, Any] = {
            "credentials_file": True,
            "security": True,
            "cluster": {"health"},
            "runtime": runtime,
        }
        # A camera without a lens key or a sub-stream is hashed as before the keys existed.
        plain: dict[int, set[str]] = {}
        for i, c in enumerate(self.cameras):
            left_out = {"lens"} if c.lens is None else set()
            if c.substream is None and c.stream == "auto":
                left_out |= {"substream", "stream"}
            if left_out:
                plain[i] = left_out
        if plain:
            exclude["cameras"] = plain
        text = self.model_dump_json(exclude=exclude)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- loading with YAML locations ---------------------------------------------------------------------------


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    node = root
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                    nxt = v
                    break
            if nxt is None:
                return node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return node
    return node


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or "(top level)"


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    storage = cfg.storage.model_copy(update={"data_dir": absolute(cfg.storage.data_dir)})
    model = cfg.model.model_copy(update={"path": absolute(cfg.model.path) if cfg.model.path else None})
    security = cfg.security.model_copy(update={"cert_dir": absolute(cfg.security.cert_dir)})
    creds = absolute(cfg.credentials_file) if cfg.credentials_file else None
    cameras = []
    for cam in cfg.cameras:
        if not cam.is_stream and not Path(cam.source).is_absolute():
            cam = cam.model_copy(update={"source": str(absolute(Path(cam.source)))})
        cameras.append(cam)
    return cfg.model_copy(
        update={"storage": storage, "model": model, "cameras": cameras, "security": security, "credentials_file": creds}
    )


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate YAML text; raise ConfigError listing every error with its line and column."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {redact(getattr(exc, 'problem', exc))}") from None
    except (ValueError, RecursionError) as exc:  # an integer of more than 4300 digits, nesting past the stack
        raise ConfigError(f"{source}: not a usable YAML document: {redact(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with store:, cameras: ... at the top level")
    try:
        cfg = Config.model_validate(data)
    except RecursionError:
        raise ConfigError(f"{source}: the config nests too deep to be a store config") from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"]) + tuple((err.get("ctx") or {}).get("at", ()))
            node = _node_at(root, loc)
            pos = f"{node.start_mark.line + 1}:{node.start_mark.column + 1}" if node is not None else "?"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; `edgepair validate-config --help` lists the keys)"
            lines.append(f"{source}:{pos}: {_loc_text(loc)}: {redact(msg)}")
        n = len(lines)
        raise ConfigError(f"{n} error{'s' if n > 1 else ''} in the store config:\n  " + "\n  ".join(lines)) from None
    cfg = _resolve_paths(cfg, base_dir or Path.cwd())
    _check_credentials(cfg, root, source)
    warnings = []
    for i, cam in enumerate(cfg.cameras):
        if cam.has_url_credentials:
            user_var, password_var = env_names(cam.id)
            warnings.append(
                f"{source}:{_pos(root, ('cameras', i, 'source'))}: cameras[{i}].source: the URL holds a user and"
                f" password: move them to the credentials file (credentials_file:, mode 0600) or to {user_var} and"
                f" {password_var}; they are kept out of logs and config_version, but not out of this YAML"
            )
        if secret_params(cam.source):
            warnings.append(
                f"{source}:{_pos(root, ('cameras', i, 'source'))}: cameras[{i}].source: the URL's query holds a"
                " password or token: it is masked in logs, errors and /health, but it is in this YAML and in"
                " config_version; a camera that accepts credentials in the user info or the credentials file is safer"
            )
    cfg._warnings = tuple(warnings)
    return cfg


def _pos(root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    node = _node_at(root, loc)
    return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}" if node is not None else "?"


def _check_credentials(cfg: Config, root: yaml.Node | None, source: str) -> None:
    """The credentials file is private, well formed and names only cameras of this config (its values are not kept)."""
    if cfg.credentials_file is None:
        return
    where = f"{source}:{_pos(root, ('credentials_file',))}: credentials_file"
    try:
        entries = load_credentials_file(cfg.credentials_file)
    except ConfigError as exc:
        raise ConfigError(f"1 error in the store config:\n  {where}: {exc}") from None
    unknown = sorted(set(entries) - {c.id for c in cfg.cameras})
    if unknown:
        raise ConfigError(
            f"1 error in the store config:\n  {where}: {cfg.credentials_file} names cameras not in this config:"
            f" {', '.join(unknown)} (a typo leaves the real camera without its password)"
        )


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found: pass --config with the path of the store's YAML") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    cfg = parse_config(text, source=str(p), base_dir=p.resolve().parent)
    for warning in cfg.warnings:
        log.warning("%s", warning)
    return cfg
