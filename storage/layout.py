"""Where a file of the dataset lives: the one place that turns a segment id into a path. Pure (stdlib only).

Rules:

- A file id is either a *segment* id ``<camera>.<window start ms>.<node>.<token>`` (:func:`storage.schema.
  make_segment_id`) or a *compacted* id ``<camera>.<period start ms>.<level>~<hash>`` (:mod:`storage.compaction`).
  :data:`SEGMENT_ID_RE` is the only form accepted from outside; it allows no ``/``, no ``..`` and no empty part, so
  that an id can name a file and nothing else.
- The path of a file is ``<data_dir>/events/store=<store>/date=<local date of its start>/camera=<camera>/<id>.parquet``
  and its signature document sits beside it as ``<id>.sig``. :func:`segment_path` builds it and checks that the
  resolved path stays inside ``<data_dir>/events`` (a symlinked folder pointing elsewhere is refused too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from cluster.errors import StorageError

EVENTS_DIR = "events"
REFUSED_DIR = "refused"
PARQUET_SUFFIX = ".parquet"
SIG_SUFFIX = ".sig"
LEVELS = ("hour", "day", "month")

_NAME = r"[A-Za-z0-9_-]{1,128}"
SEGMENT_ID_RE = re.compile(
    rf"^(?P<camera>{_NAME})\.(?P<ms>\d{{1,15}})\."
    rf"(?:(?P<node>{_NAME})\.(?P<token>\d{{1,18}})|(?P<level>hour|day|month)~(?P<hash>[0-9A-Za-z]{{1,64}}))$"
)
STORE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class FileId:
    """The parts of a checked file id."""

    text: str
    camera_id: str
    start_ms: int
    node: str | None  # a segment's producer (sanitized); None for a compacted file
    token: int | None
    level: str | None  # hour, day or month for a compacted file

    @property
    def compacted(self) -> bool:
        return self.level is not None


def parse_file_id(segment_id: object) -> FileId:
    """The parts of ``segment_id``, or StorageError if it is not exactly a segment or compacted id."""
    if not isinstance(segment_id, str) or len(segment_id) > 400:
        raise StorageError(f"file id {str(segment_id)[:80]!r} is not a string of at most 400 characters")
    m = SEGMENT_ID_RE.match(segment_id)
    if m is None:
        raise StorageError(
            f"file id {segment_id[:120]!r} is neither <camera>.<ms>.<node>.<token> nor <camera>.<ms>.<level>~<hash>"
        )
    token = m.group("token")
    node, level = m.group("node"), m.group("level")
    return FileId(segment_id, m.group("camera"), int(m.group("ms")), node, int(token) if token else None, level)


def check_store_id(store_id: str) -> str:
    if not isinstance(store_id, str) or not STORE_ID_RE.match(store_id):
        raise StorageError(f"store id {store_id!r} cannot name a folder (expected [A-Za-z0-9][A-Za-z0-9_-]*)")
    return store_id


def local_date(epoch_s: float, tz: ZoneInfo) -> str:
    """The local calendar date (YYYY-MM-DD) of a UTC epoch in ``tz``."""
    return datetime.fromtimestamp(epoch_s, tz).date().isoformat()


def segment_path(data_dir: Path, store_id: str, camera_id: str, start: float, tz: ZoneInfo, segment_id: str) -> Path:
    """The final path of a file (module rules); StorageError if any part could lead outside the events folder."""
    fid = parse_file_id(segment_id)
    if fid.camera_id != camera_id:
        raise StorageError(f"file {segment_id} is of camera {fid.camera_id}, not {camera_id}")
    root = Path(data_dir) / EVENTS_DIR
    path = (
        root
        / f"store={check_store_id(store_id)}"
        / f"date={local_date(start, tz)}"
        / f"camera={camera_id}"
        / f"{segment_id}{PARQUET_SUFFIX}"
    )
    check_inside(path, root)
    return path


def check_inside(path: Path, root: Path) -> Path:
    """``path`` if it resolves (symlinks followed) inside ``root``; StorageError otherwise."""
    real_root = Path(root).resolve()
    real = Path(path).resolve()
    if real_root not in real.parents:
        raise StorageError(f"path {path} resolves to {real}, outside {real_root}: refused")
    return path


def sig_path(path: Path) -> Path:
    """The signature document beside a file: ``<id>.sig`` for ``<id>.parquet``."""
    return Path(path).with_suffix(SIG_SUFFIX)
