"""What a file of the dataset may claim: sane windows, runs, counts and schema. Pure; used at the door
(:mod:`storage.admission`, every received file) and at scan (:mod:`storage.catalog`, every local file), so that one
absurd file can neither enter nor, once on disk, break the views.

Rules (each violation has a *reason*, the label it is counted under):

- ``bad_id``: the id is not a segment or compacted id (:data:`storage.layout.SEGMENT_ID_RE`) or disagrees with the
  metadata (camera, window start, producer, token).
- ``schema``: ``edgepair.schema_version`` is not one this release reads, or the Arrow schema is not
  :data:`storage.schema.EVENT_SCHEMA`.
- ``window``: a window must be finite, within 2000..2100 UTC, end after start, and a segment at most
  :data:`MAX_SEGMENT_S` long. A compacted file spans at most :data:`MAX_COMPACTED_S` (a local month, as compaction
  makes); each of its runs lies inside the file's window with end after start. Event timestamps lie in 2000..2100.
- ``rows``: rows and frames are non-negative and bounded (:data:`MAX_ROWS`; frames at most :data:`MAX_FPS` per
  second of window); the row count in the metadata is the file's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from cluster.errors import StorageError
from storage.layout import parse_file_id
from storage.schema import EVENT_SCHEMA, META_PREFIX, SCHEMA_VERSION, sanitize_id

if TYPE_CHECKING:
    from storage.catalog import CatalogEntry

READ_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})
MIN_EPOCH = 946_684_800.0  # 2000-01-01T00:00Z
MAX_EPOCH = 4_102_444_800.0  # 2100-01-01T00:00Z
MAX_SEGMENT_S = 6 * 3600.0
MAX_COMPACTED_S = 33 * 86400.0
MAX_FPS = 240
MAX_ROWS = 50_000_000
MAX_RUNS = 100_000
_EPS = 1e-6


class Refused(StorageError):
    """A file the rules refuse, with the ``reason`` it is counted under; ``keep``: its bytes go to ``refused/``."""

    def __init__(self, reason: str, message: str, *, keep: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.keep = keep


def _epoch_ok(t: float) -> bool:
    return isinstance(t, int | float) and math.isfinite(t) and MIN_EPOCH <= t <= MAX_EPOCH


def check_schema(kv: Mapping[bytes, bytes], schema: pa.Schema, source: str) -> None:
    """Refused(``schema``) unless the schema version is read by this release and the columns are EVENT_SCHEMA's."""
    version = kv.get(f"{META_PREFIX}schema_version".encode(), b"").decode(errors="replace")
    if version not in READ_SCHEMA_VERSIONS:
        raise Refused("schema", f"{source}: schema version {version[:20]!r} is not one this release reads")
    if not schema.remove_metadata().equals(EVENT_SCHEMA):
        raise Refused("schema", f"{source}: its columns are not the event schema of version {SCHEMA_VERSION}")


def check_entry(e: CatalogEntry) -> None:
    """Refused with its reason unless ``e``'s id, window, runs and counts are possible (module rules)."""
    try:
        fid = parse_file_id(e.segment_id)
    except StorageError as exc:
        raise Refused("bad_id", str(exc)) from None
    src = e.segment_id
    if fid.camera_id != e.camera_id:
        raise Refused("bad_id", f"{src}: id names camera {fid.camera_id}, metadata {e.camera_id}")
    if not (_epoch_ok(e.window_start) and _epoch_ok(e.window_end)) or not e.window_end > e.window_start:
        raise Refused("window", f"{src}: window {e.window_start!r}..{e.window_end!r} is not within 2000..2100")
    span = e.window_end - e.window_start
    if fid.compacted:
        if span > MAX_COMPACTED_S:
            raise Refused("window", f"{src}: a compacted file of {span / 86400:.1f} days (at most a month)")
        if fid.start_ms / 1000 > e.window_start + _EPS or e.window_start - fid.start_ms / 1000 > MAX_COMPACTED_S:
            raise Refused("bad_id", f"{src}: id's period start is not its window's")
        if not e.runs or len(e.runs) > MAX_RUNS:
            raise Refused("window", f"{src}: a compacted file with {len(e.runs)} runs")
        for r in e.runs:
            ok = _epoch_ok(r.start) and _epoch_ok(r.end) and r.end > r.start
            if not ok or r.start < e.window_start - _EPS or r.end > e.window_end + _EPS:
                raise Refused("window", f"{src}: run {r.start!r}..{r.end!r} is outside the file's window")
            if not (isinstance(r.token, int) and isinstance(r.frames, int) and isinstance(r.node, str)):
                raise Refused("window", f"{src}: a run of malformed types")
            if r.token < 0 or r.frames < 0 or r.frames > MAX_FPS * (r.end - r.start) + MAX_FPS:
                raise Refused("rows", f"{src}: run with token {r.token} and {r.frames} frames")
    else:
        if span > MAX_SEGMENT_S:
            raise Refused("window", f"{src}: a segment of {span:.0f} s (at most {MAX_SEGMENT_S:.0f})")
        if fid.start_ms != round(e.window_start * 1000):
            raise Refused("bad_id", f"{src}: id's window start is not its metadata's {e.window_start!r}")
        if fid.node != sanitize_id(e.node) or fid.token != e.token:
            raise Refused("bad_id", f"{src}: id's producer is not its metadata's {e.node}/{e.token}")
    if not 0 <= e.rows <= MAX_ROWS or not 0 <= e.frames <= MAX_FPS * span + MAX_FPS or e.token < 0:
        raise Refused("rows", f"{src}: {e.rows} rows, {e.frames} frames, token {e.token} are impossible")


def check_ts_range(lo: float | None, hi: float | None, source: str) -> None:
    """Refused(``window``) unless every event timestamp (min ``lo``, max ``hi``, epoch s) lies in 2000..2100."""
    if lo is None or hi is None:
        return
    if not (_epoch_ok(lo) and _epoch_ok(hi)):
        raise Refused("window", f"{source}: event timestamps {lo!r}..{hi!r} are not within 2000..2100")
