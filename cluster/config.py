"""The store config: one YAML file per store, strictly validated (after Frigate).

Unknown keys are rejected, every field has a description, cross-field rules live in model validators, and
``load_config`` reports every error with its YAML location (``store.yaml:12:7: cameras[0].lines[1].start: ...``).
Coordinates of lines and zones are normalised to the frame: 0..1 from left to right and top to bottom.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster.errors import ConfigError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
Point = tuple[float, float]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_point(p: Point, what: str) -> Point:
    x, y = p
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"{what} {list(p)} is outside the frame: coordinates are normalised, 0..1")
    return p


class StoreConfig(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Store identifier, the same in every copy of its data.")
    timezone: str = Field(description="IANA time zone of the store, e.g. Europe/London; every KPI is local time.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as Europe/London") from exc
        return v


class ModelConfig(Strict):
    path: Path | None = Field(
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
    polygon: list[Point] = Field(min_length=3, description="Polygon vertices, normalised [x, y], at least 3.")
    min_dwell_s: float = Field(default=0.0, ge=0, description="Visits shorter than this are not KPI visits.")
    exit_grace_s: float = Field(default=1.0, ge=0, description="Absence shorter than this does not end a visit.")

    @model_validator(mode="after")
    def _geometry(self) -> ZoneConfig:
        for i, p in enumerate(self.polygon):
            _check_point(p, f"zone {self.id}: vertex {i}")
        pts = self.polygon
        area = 0.5 * abs(sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(pts, pts[1:] + pts[:1], strict=True)))
        if area < 1e-6:
            raise ValueError(f"zone {self.id}: the polygon has no area")
        return self


class CameraConfig(Strict):
    id: str = Field(pattern=ID_PATTERN, description="Camera identifier, e.g. cam-1.")
    source: str = Field(description="Video file path, rtsp:// or http(s):// URL.")
    fps: float | None = Field(default=None, gt=0, le=60, description="Frames a second to process; default: source.")
    playback: Literal["realtime", "fast", "live"] = Field(
        default="realtime",
        description="Files only: realtime paces at fps; fast reads as fast as inference goes (no drops); "
        "live follows the wall clock (both workstations see the same frame at the same moment).",
    )
    loop: bool = Field(default=False, description="Files only: start again at the end.")
    anchor: Literal["bottom_center", "center"] = Field(default="bottom_center", description="Point of a box counted.")
    lines: list[LineConfig] = Field(default_factory=list)
    zones: list[ZoneConfig] = Field(default_factory=list)

    @property
    def is_stream(self) -> bool:
        return bool(re.match(r"^(rtsp|rtsps|http|https)://", self.source))

    @model_validator(mode="after")
    def _unique(self) -> CameraConfig:
        for what, items in (("line", self.lines), ("zone", self.zones)):
            ids = [i.id for i in items]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"camera {self.id}: {what} ids must be unique, repeated: {', '.join(dup)}")
        if self.is_stream and (self.loop or self.playback != "realtime"):
            raise ValueError(f"camera {self.id}: loop and playback apply to video files, not to streams")
        return self


class TrackingConfig(Strict):
    high_thresh: float = Field(default=0.5, gt=0, lt=1, description="Detections above are first-stage matches.")
    low_thresh: float = Field(default=0.1, gt=0, lt=1, description="Detections above are second-stage matches.")
    new_track_thresh: float = Field(default=0.6, gt=0, lt=1, description="Score needed to start a track.")
    match_iou: float = Field(
        default=0.1, gt=0, lt=1, description="Minimum IoU (times the score), first association; 0.1 suits 5-10 fps."
    )
    second_match_iou: float = Field(default=0.5, gt=0, lt=1, description="Minimum IoU, second association.")
    min_hits: int = Field(default=3, ge=1, le=30, description="Frames before a track is confirmed and counted.")
    max_lost_s: float = Field(default=3.0, gt=0, le=60, description="Seconds a lost track is kept for re-matching.")


class StorageConfig(Strict):
    data_dir: Path = Field(default=Path("data"), description="Where segments are written (relative: to the config).")
    flush_interval_s: float = Field(default=1.0, ge=0.1, le=60, description="Seconds covered by one segment.")
    retention_days: int = Field(default=400, ge=1, description="Days of data kept.")


class RuntimeConfig(Strict):
    num_cpus: int = Field(default=0, ge=0, le=256, description="CPUs given to the local Ray; 0 = all cores.")
    inference_batch: int = Field(default=4, ge=1, le=64, description="Most frames run in one inference call.")
    inflight: int = Field(default=2, ge=1, le=8, description="Frames per camera sent to inference ahead.")
    frame_queue: int = Field(default=2, ge=1, le=64, description="Frames a camera buffers; older ones are dropped.")
    watchdog_s: float = Field(default=10.0, gt=0, description="A source read hanging this long is reopened.")


class KpiConfig(Strict):
    bounce_s: float = Field(default=10.0, ge=0, description="Visits shorter than this are bounces.")
    visit_merge_s: float = Field(default=5.0, ge=0, description="Visits of one track closer than this merge.")
    opening_hours: tuple[str, str] = Field(default=("00:00", "24:00"), description="Local opening hours HH:MM.")


class NodeConfig(Strict):
    name: str = Field(pattern=ID_PATTERN, description="Workstation name, e.g. ws-a.")
    host: str = Field(default="127.0.0.1", description="Address the peer uses to reach this workstation.")
    flight_port: int = Field(default=8815, ge=1, le=65535, description="Arrow Flight port (segment replication).")
    metrics_port: int = Field(default=9101, ge=1, le=65535, description="Health and Prometheus metrics port.")
    capacity: int = Field(default=16, ge=1, le=256, description="Cameras this workstation can run at full rate.")


class ClusterConfig(Strict):
    etcd_endpoints: list[str] = Field(
        default_factory=list, description="Every etcd member (both workstations and the witness), http://host:port."
    )
    ttl_s: float = Field(default=2.0, ge=1, le=60, description="Leader and member lease TTL in seconds.")
    nodes: list[NodeConfig] = Field(default_factory=list, description="The two workstations of the store.")
    raft_leader: str | None = Field(
        default=None,
        description="The etcd member (one of etcd_endpoints, normally the witness) the leading agent keeps etcd's raft"
        " leadership on, so that a workstation's death never costs an etcd election (which extends every lease).",
    )

    @model_validator(mode="after")
    def _pair(self) -> ClusterConfig:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("cluster.nodes: names must be unique")
        if self.nodes and len(self.etcd_endpoints) < 3:
            raise ValueError("cluster.etcd_endpoints: name all 3 etcd members (a 2-member etcd survives no failure)")
        if self.raft_leader is not None and self.raft_leader not in self.etcd_endpoints:
            raise ValueError(
                f"cluster.raft_leader: {self.raft_leader!r} is not one of cluster.etcd_endpoints; name the witness's"
                " endpoint exactly as it is listed there, or leave raft_leader out"
            )
        return self


class Config(Strict):
    store: StoreConfig
    node: str = Field(default="ws-a", pattern=ID_PATTERN, description="Name of this workstation.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    cameras: list[CameraConfig] = Field(min_length=1)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    kpi: KpiConfig = Field(default_factory=KpiConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    def node_config(self, name: str) -> NodeConfig:
        for n in self.cluster.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.cluster.nodes) or "none"
        raise ConfigError(f"node {name!r} is not in cluster.nodes of the store config (known: {known})")

    @model_validator(mode="after")
    def _unique_cameras(self) -> Config:
        ids = [c.id for c in self.cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera ids must be unique, repeated: {', '.join(dup)}")
        return self

    def version(self) -> str:
        """A short hash of the whole validated config, stored with every event."""
        text = self.model_dump_json()
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
    cameras = []
    for cam in cfg.cameras:
        if not cam.is_stream and not Path(cam.source).is_absolute():
            cam = cam.model_copy(update={"source": str(absolute(Path(cam.source)))})
        cameras.append(cam)
    return cfg.model_copy(update={"storage": storage, "model": model, "cameras": cameras})


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate YAML text; raise ConfigError listing every error with its line and column."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with store:, cameras: ... at the top level")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            node = _node_at(root, loc)
            pos = f"{node.start_mark.line + 1}:{node.start_mark.column + 1}" if node is not None else "?"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; `edgepair validate-config --help` lists the keys)"
            lines.append(f"{source}:{pos}: {_loc_text(loc)}: {msg}")
        n = len(lines)
        raise ConfigError(f"{n} error{'s' if n > 1 else ''} in the store config:\n  " + "\n  ".join(lines)) from None
    return _resolve_paths(cfg, base_dir or Path.cwd())


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found: pass --config with the path of the store's YAML") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    return parse_config(text, source=str(p), base_dir=p.resolve().parent)
