"""The event segment format: Arrow schema, rows from events, and segment metadata. Pure module (pyarrow only).

A segment is one Parquet file holding the events of one camera for one flush window. Its rows follow
:data:`EVENT_SCHEMA`; what the segment covers (the window, the frames processed, who wrote it under which fencing
token) is stored once in the file's key-value metadata under the ``edgepair.`` prefix, so that a segment with zero
events still records that the window was watched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from actors.events import Event
from cluster.errors import StorageError

SCHEMA_VERSION = "1"
META_PREFIX = "edgepair."

CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("store_id", pa.string(), nullable=False),
        pa.field("camera_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("track_id", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("line_id", pa.string(), nullable=True),
        pa.field("zone_id", pa.string(), nullable=True),
        pa.field("direction", pa.string(), nullable=True),
        pa.field("dwell_s", pa.float64(), nullable=True),
        pa.field("node", pa.string(), nullable=False),
        pa.field("token", pa.int64(), nullable=False),
        pa.field("config_version", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("segment_id", pa.string(), nullable=False),
        pa.field("seq", pa.int32(), nullable=False),
    ]
)
"""Columns of every event segment, in file order."""


def _epoch_to_us(ts: float) -> int:
    """UTC epoch seconds to integer microseconds, rounded (not truncated) so 0.1 s stays 100000 us."""
    if not math.isfinite(ts):
        raise ValueError(f"event timestamp must be a finite epoch in seconds, got {ts!r}")
    return round(ts * 1_000_000)


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_camera_id(camera_id: str) -> str:
    """Return ``camera_id`` if it matches ``[A-Za-z0-9_-]+``, else raise ValueError (it names files and folders)."""
    if not isinstance(camera_id, str) or not CAMERA_ID_RE.match(camera_id):
        raise ValueError(f"camera_id must match [A-Za-z0-9_-]+ (it names folders and files), got {camera_id!r}")
    return camera_id


def sanitize_id(value: str) -> str:
    """Replace every character outside ``[A-Za-z0-9_-]`` by ``-`` (a node name such as ``ws-1.store.lan``)."""
    cleaned = _UNSAFE_ID_CHARS.sub("-", value)
    if not cleaned:
        raise ValueError(f"identifier {value!r} is empty once sanitized")
    return cleaned


def make_segment_id(camera_id: str, window_start: float, node: str, token: int) -> str:
    """The deterministic id of the segment of ``camera_id`` for the window starting at ``window_start``.

    ``f"{camera_id}.{window_start_ms}.{node}.{token}"``: unique per producer (node and fencing token), the same on
    every retry of the same flush, and safe as a file name (the node name is sanitized, so dots only separate).
    """
    check_camera_id(camera_id)
    if token < 0:
        raise ValueError(f"token must be >= 0 (0 when no election), got {token}")
    return f"{camera_id}.{round(window_start * 1000)}.{sanitize_id(_check_text('node', node))}.{int(token)}"


def events_to_table(
    events: Iterable[Event],
    *,
    store_id: str,
    node: str,
    token: int,
    config_version: str,
    model_version: str,
    segment_id: str,
) -> pa.Table:
    """Build the rows of one segment from ``events``, in the order given (``seq`` is that order, from 0).

    The table has :data:`EVENT_SCHEMA` and no segment metadata yet (see :func:`with_segment_meta`). Zero events
    give a zero-row table with the same columns.
    """
    for name, value in (
        ("store_id", store_id),
        ("node", node),
        ("config_version", config_version),
        ("model_version", model_version),
        ("segment_id", segment_id),
    ):
        _check_text(name, value)
    if token < 0:
        raise ValueError(f"token must be >= 0 (0 when no election), got {token}")
    rows = list(events)
    for i, event in enumerate(rows):
        if not isinstance(event, Event):
            raise TypeError(f"events[{i}] must be an actors.events.Event, got {type(event).__name__}")
    n = len(rows)
    columns: dict[str, pa.Array] = {
        "store_id": pa.array([store_id] * n, pa.string()),
        "camera_id": pa.array([e.camera_id for e in rows], pa.string()),
        "ts": pa.array([_epoch_to_us(e.ts) for e in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "track_id": pa.array([e.track_id for e in rows], pa.int64()),
        "kind": pa.array([e.kind for e in rows], pa.string()),
        "line_id": pa.array([e.line_id for e in rows], pa.string()),
        "zone_id": pa.array([e.zone_id for e in rows], pa.string()),
        "direction": pa.array([e.direction for e in rows], pa.string()),
        "dwell_s": pa.array([e.dwell_s for e in rows], pa.float64()),
        "node": pa.array([node] * n, pa.string()),
        "token": pa.array([token] * n, pa.int64()),
        "config_version": pa.array([config_version] * n, pa.string()),
        "model_version": pa.array([model_version] * n, pa.string()),
        "segment_id": pa.array([segment_id] * n, pa.string()),
        "seq": pa.array(range(n), pa.int32()),
    }
    return pa.Table.from_arrays([columns[f.name] for f in EVENT_SCHEMA], schema=EVENT_SCHEMA)


MAX_FRAME_TIMES_CHARS = 64 * 1024
"""Bound on ``frame_times`` (a hostile file's metadata is read before anything else): 1 s windows at 30 fps need
about 150 characters."""


def frame_offsets(text: str) -> list[int]:
    """``frame_times`` as integers (ms after the window start); ValueError for text that is not such a list."""
    if not text:
        return []
    if len(text) > MAX_FRAME_TIMES_CHARS:
        raise ValueError(f"frame_times is {len(text)} characters, at most {MAX_FRAME_TIMES_CHARS}")
    parts = text.split(",")
    if not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts):
        raise ValueError("frame_times must be comma-separated whole milliseconds")
    return [int(p) for p in parts]


def encode_frame_times(window_start: float, times: Iterable[float]) -> str:
    """The ``frame_times`` text of frames at ``times`` (UTC epoch s) in a window starting at ``window_start``."""
    return ",".join(str(max(0, round((t - window_start) * 1000))) for t in times)


OPTIONAL_META = frozenset({"first_frame", "last_frame", "frame_times"})
"""Metadata fields a segment of an earlier release may lack (read as their default)."""


@dataclass(frozen=True)
class SegmentMeta:
    """What one segment covers and who wrote it; stored as Parquet key-value metadata (``edgepair.<field>``).

    ``window_start``/``window_end`` are UTC epoch seconds: the time actually processed, so that an analyst can tell
    "no visitors" from "no coverage". ``frames`` is the number of frames processed in the window. ``token`` is the
    fencing token under which the segment was written (0 when no election). ``timezone`` is the store's IANA zone.
    ``first_frame``/``last_frame``: the timestamps (UTC epoch s, the capture time of the frame) of the first and last
    frame processed in the window, 0.0 when none was (or the file predates them): the drills measure from them when
    two producers processed the same camera at the same time, which a window's claim cannot show.
    ``frame_times``: every frame processed in the window, as comma-separated whole milliseconds after
    ``window_start`` (one per frame, in order; empty when unknown): a drill's baseline replays exactly these frames,
    so frames a loaded node skipped do not make the comparison inconclusive (:func:`frame_offsets`).
    """

    segment_id: str
    store_id: str
    camera_id: str
    window_start: float
    window_end: float
    frames: int
    node: str
    token: int
    rows: int
    config_version: str
    model_version: str
    timezone: str
    first_frame: float = 0.0
    last_frame: float = 0.0
    frame_times: str = ""

    def __post_init__(self) -> None:
        check_camera_id(self.camera_id)
        for name in ("segment_id", "store_id", "node", "config_version", "model_version", "timezone"):
            _check_text(name, getattr(self, name))
        if not (math.isfinite(self.window_start) and math.isfinite(self.window_end)):
            raise ValueError(f"window must be finite epoch seconds, got {self.window_start!r}..{self.window_end!r}")
        if self.window_end < self.window_start:
            raise ValueError(f"window_end {self.window_end} is before window_start {self.window_start}")
        for name in ("frames", "token", "rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.first_frame) and math.isfinite(self.last_frame)):
            raise ValueError(f"frame times must be finite, got {self.first_frame!r}..{self.last_frame!r}")
        if self.first_frame or self.last_frame:
            slack = 1e-3  # the window's start is rounded to the microsecond
            if not self.window_start - slack <= self.first_frame <= self.last_frame <= self.window_end + slack:
                raise ValueError(
                    f"frames {self.first_frame!r}..{self.last_frame!r} are not inside the window"
                    f" {self.window_start!r}..{self.window_end!r}"
                )

        if self.frame_times:
            offsets = frame_offsets(self.frame_times)  # ValueError naming the problem
            span_ms = (self.window_end - self.window_start) * 1000 + 1
            if len(offsets) != self.frames or any(not 0 <= o <= span_ms for o in offsets) or offsets != sorted(offsets):
                raise ValueError(
                    f"frame_times: {len(offsets)} offsets for {self.frames} frames, each in 0..{span_ms:.0f} ms and in"
                    " order expected"
                )

    @property
    def frame_timestamps(self) -> list[float]:
        """The timestamps (UTC epoch s) of the frames processed in the window; [] when unknown."""
        return [self.window_start + o / 1000 for o in frame_offsets(self.frame_times)]

    def to_kv(self) -> dict[bytes, bytes]:
        """The metadata entries, ``edgepair.``-prefixed, values as text (floats with ``repr`` so they round-trip)."""
        kv = {f"{META_PREFIX}schema_version".encode(): SCHEMA_VERSION.encode()}
        for key, value in asdict(self).items():
            kv[f"{META_PREFIX}{key}".encode()] = (
                repr(value).encode() if isinstance(value, float) else str(value).encode()
            )
        return kv

    @classmethod
    def from_kv(cls, kv: Mapping[bytes, bytes], *, source: str = "segment") -> SegmentMeta:
        """Parse the entries written by :meth:`to_kv`; raise StorageError naming ``source`` if any is missing/bad."""
        values: dict[str, object] = {}
        try:
            for f in fields(cls):
                raw = kv.get(f"{META_PREFIX}{f.name}".encode())
                if raw is None and f.name in OPTIONAL_META:
                    continue  # written before this field existed: its default
                if raw is None:
                    raise KeyError(f"{META_PREFIX}{f.name}")
                text = raw.decode()
                values[f.name] = float(text) if f.type == "float" else int(text) if f.type == "int" else text
            return cls(**values)  # type: ignore[arg-type]
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise StorageError(
                f"{source} has no valid edgepair segment metadata ({exc}); it was not written by SegmentWriter"
                " or is corrupt: move it out of the data folder"
            ) from exc


def with_segment_meta(table: pa.Table, meta: SegmentMeta) -> pa.Table:
    """Return ``table`` with ``meta`` attached as schema metadata (written to the Parquet key-value metadata)."""
    if table.num_rows != meta.rows:
        raise ValueError(f"segment {meta.segment_id}: meta says {meta.rows} rows, table has {table.num_rows}")
    existing = dict(table.schema.metadata or {})
    existing.update(meta.to_kv())
    return table.replace_schema_metadata(existing)


def read_segment_meta(path: Path | str) -> SegmentMeta:
    """Read the :class:`SegmentMeta` of the Parquet segment at ``path`` (footer only, not the rows).

    Raises StorageError if the file cannot be read, is not Parquet, or has no edgepair metadata.
    """
    try:
        kv = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(
            f"cannot read segment metadata from {path}: {exc}; check the file exists and is Parquet"
        ) from exc
    return SegmentMeta.from_kv(kv, source=str(path))
