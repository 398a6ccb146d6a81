"""Write event segments as immutable Parquet files: temporary name, fsync, rename, fsync the folder.

Layout (hive partitions, read by :mod:`storage.views`)::

    <data_dir>/events/store=<store_id>/date=<local date of window_start>/camera=<camera_id>/<segment_id>.parquet

One file per camera per flush window, even with zero events (it records coverage). A file, once named, never
changes: writing the same segment again with the same bytes is a no-op, with other bytes it is refused.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.parquet as pq

from actors.events import Event
from cluster.errors import ConfigError, StorageError
from storage.layout import EVENTS_DIR as EVENTS_DIR
from storage.layout import local_date as local_date
from storage.layout import segment_path, sig_path
from storage.schema import (
    SegmentMeta,
    check_camera_id,
    encode_frame_times,
    events_to_table,
    make_segment_id,
    with_segment_meta,
)

if TYPE_CHECKING:
    from cluster.pki import Signer

log = logging.getLogger(__name__)

FILE_MODE = 0o640
"""Mode of every data file and signature (owner writes, the service group reads, others nothing)."""
DIR_MODE = 0o750
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
PARQUET_COMPRESSION = "zstd"

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


@dataclass(frozen=True)
class SegmentInfo:
    """A segment that is durably on disk under its final name."""

    segment_id: str
    path: Path
    rows: int
    sha256: str
    meta: SegmentMeta
    existed: bool = False
    """True when an identical file was already there (idempotent rewrite); nothing was written."""


def load_timezone(timezone: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name, or ConfigError saying how to fix it (tzdata is needed, offline)."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown time zone {timezone!r}: use an IANA name such as 'Europe/London'"
            " (and install the system tzdata package or the Python 'tzdata' package)"
        ) from exc


def _hint(exc: OSError, folder: Path) -> str:
    if exc.errno in _NO_SPACE:
        return f"free space on the disk holding {folder}"
    if exc.errno in _NO_PERMISSION:
        return (
            f"check permissions of {folder} (the node must be able to write there) and that the disk is not read-only"
        )
    return f"check the disk holding {folder}"


def fsync_path(folder: Path) -> None:
    """fsync a file or a folder by path (a folder: so that a rename in it is durable)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_empty_dirs(data_dir: Path, relpaths: list[str]) -> int:
    """Remove the ``camera=``/``date=`` folders that deleting ``relpaths`` left empty; returns how many.

    Months of compacted data otherwise leave thousands of empty day folders that every query's glob walks (a year of
    16 cameras: 5,600 of them doubled the hourly-traffic query). ``os.rmdir`` removes only an empty folder, so a file
    written meanwhile keeps its folder; a writer whose folder vanished between its mkdir and its write fails that
    write with an error and writes again (the worker keeps the window; replication fetches again).
    """
    root = Path(data_dir) / EVENTS_DIR
    removed = 0
    for folder in sorted({(Path(data_dir) / r).parent for r in relpaths}, reverse=True):
        for d in (folder, folder.parent):
            if d == root or root not in d.parents:
                break
            try:
                d.rmdir()
            except OSError:
                break  # not empty (or gone): its parent is not empty either
            removed += 1
    return removed


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove temporary file %s: %s", path, exc)


def is_temp_file(path: Path) -> bool:
    """True for a writer's temporary file (``.<name>.tmp``), which readers and replication must ignore."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)


def sweep_temp_files(data_dir: Path, *, min_age_s: float = 0.0) -> list[Path]:
    """Remove temporary files left under ``data_dir/events`` by a crashed writer; return those removed.

    Call it at start, before any writer of this node runs (a temp file younger than ``min_age_s`` is kept).
    Files that cannot be removed are logged and skipped.
    """
    root = Path(data_dir) / EVENTS_DIR
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for path in root.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        try:
            if not path.is_file() or now - path.stat().st_mtime < min_age_s:
                continue
            path.unlink()
        except OSError as exc:
            log.warning("could not remove stale temporary segment %s: %s", path, exc)
            continue
        removed.append(path)
        log.info("removed stale temporary segment %s", path)
    return removed


_warned_unsigned: set[str] = set()


def warn_unsigned_once(node: str, what: str = "segments") -> None:
    """The plain-text opt-out (``security.tls: false``) writes unsigned files: say so once per node and process."""
    if node not in _warned_unsigned:
        _warned_unsigned.add(node)
        log.warning(
            "node %s: writes UNSIGNED %s (security.tls is false): nothing proves later that they were not altered;"
            " a pair with TLS refuses them",
            node,
            what,
        )


def _of_camera(camera_id: str, events: Iterable[Event]) -> list[Event]:
    """``events`` as a list; ValueError for one of another camera (a segment holds one camera's events)."""
    rows = list(events)
    for event in rows:
        if event.camera_id != camera_id:
            raise ValueError(
                f"segment of camera {camera_id!r} got an event of camera {event.camera_id!r} (track {event.track_id})"
            )
    return rows


class SegmentWriter:
    """Writes the segments of one store on one node. One verb: :meth:`write`.

    ``timezone`` is the store's IANA zone; it picks the ``date=`` partition (local date of the window start).
    ``signer`` (this node's :class:`cluster.pki.Signer`) signs every file: its signature document is written first,
    as ``<id>.sig`` beside the file, then the file; None writes unsigned files (the plain-text opt-out, logged once).
    """

    def __init__(
        self, data_dir: Path, store_id: str, timezone: str, node: str, *, signer: Signer | None = None
    ) -> None:
        if not store_id or not isinstance(store_id, str):
            raise ValueError(f"store_id must be a non-empty string, got {store_id!r}")
        if "/" in store_id or store_id.startswith("."):
            raise ValueError(f"store_id {store_id!r} cannot name a folder (no '/' and no leading '.')")
        if not node or not isinstance(node, str):
            raise ValueError(f"node must be a non-empty string, got {node!r}")
        self.data_dir = Path(data_dir)
        self.store_id = store_id
        self.timezone = timezone
        self.node = node
        self.signer = signer
        self._tz = load_timezone(timezone)
        if signer is None:
            warn_unsigned_once(node)

    def segment_path(self, camera_id: str, window_start: float, segment_id: str) -> Path:
        """The final path of a segment (see :func:`storage.layout.segment_path`)."""
        return segment_path(
            self.data_dir, self.store_id, check_camera_id(camera_id), window_start, self._tz, segment_id
        )

    def write(
        self,
        camera_id: str,
        window_start: float,
        window_end: float,
        events: Iterable[Event],
        *,
        frames: int,
        token: int,
        config_version: str,
        model_version: str,
        first_frame: float = 0.0,
        last_frame: float = 0.0,
        frame_times: Sequence[float] = (),
    ) -> SegmentInfo:
        """Durably write the segment of ``camera_id`` for ``[window_start, window_end]`` and return it.

        ``first_frame``/``last_frame``: the timestamps of the first and last frame processed in the window (0.0:
        none), recorded in the metadata (:class:`storage.schema.SegmentMeta`); ``frame_times``: the timestamp of
        every frame processed in the window (empty: not recorded).

        ``events`` may be empty: the file is still written, recording that the window was watched. Every event must
        belong to ``camera_id``. Idempotent: if the file exists with the same bytes, it is returned as is
        (``existed=True``). Raises StorageError if it exists with other bytes, or on any OS error (full disk,
        permissions), in which case no partial file is visible and no temporary file is left.
        """
        rows = _of_camera(camera_id, events)
        segment_id = make_segment_id(camera_id, window_start, self.node, token)
        meta = SegmentMeta(
            segment_id=segment_id,
            store_id=self.store_id,
            camera_id=camera_id,
            window_start=float(window_start),
            window_end=float(window_end),
            frames=frames,
            node=self.node,
            token=token,
            rows=len(rows),
            config_version=config_version,
            model_version=model_version,
            timezone=self.timezone,
            first_frame=float(first_frame),
            last_frame=float(last_frame),
            frame_times=encode_frame_times(float(window_start), frame_times),
        )
        table = events_to_table(
            rows,
            store_id=self.store_id,
            node=self.node,
            token=token,
            config_version=config_version,
            model_version=model_version,
            segment_id=segment_id,
        )
        data = _to_parquet_bytes(with_segment_meta(table, meta))
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.segment_path(camera_id, window_start, segment_id)

        if self._existing(path, sha256, segment_id):
            self._sign_kept(path, segment_id, sha256)
            log.info(
                "camera %s: segment %s already written with the same content, kept %s", camera_id, segment_id, path
            )
            return SegmentInfo(segment_id, path, len(rows), sha256, meta, existed=True)

        if self.signer is not None:  # the signature first, made durable by the file's fsyncs (storage.signing)
            write_atomic(sig_path(path), self.signer.sign(segment_id, sha256), sync_dir=False, sync_file=False)
        self._write_atomic(path, data)
        log.info(
            "camera %s: wrote segment %s (%d events, %d frames, token %d) to %s",
            camera_id,
            segment_id,
            len(rows),
            frames,
            token,
            path,
        )
        return SegmentInfo(segment_id, path, len(rows), sha256, meta)

    def _sign_kept(self, path: Path, segment_id: str, sha256: str) -> None:
        """A segment kept as it was: signed now if it has no signature (the unsigned release, or a torn one)."""
        from storage.signing import read_sig

        if self.signer is not None and read_sig(path) is None:
            write_atomic(sig_path(path), self.signer.sign(segment_id, sha256))

    def _existing(self, path: Path, sha256: str, segment_id: str) -> bool:
        """True if ``path`` already holds these bytes; StorageError if it holds others."""
        try:
            found = _sha256_file(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(
                f"cannot read existing segment {path}: {exc.strerror}; {_hint(exc, path.parent)}"
            ) from exc
        if found != sha256:
            raise StorageError(
                f"segment {segment_id} already exists at {path} with different content (sha256 {found[:12]}..., new"
                f" {sha256[:12]}...); segments are immutable: the same producer wrote two versions of one window,"
                " check that node and fencing token are unique per writer"
            )
        return True

    def _write_atomic(self, path: Path, data: bytes) -> None:
        write_atomic(path, data)


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at ``path`` (read in 1 MiB chunks)."""
    return _sha256_file(path)


def write_atomic(
    path: Path,
    data: bytes,
    *,
    exclusive: bool = False,
    mode: int = FILE_MODE,
    sync_dir: bool = True,
    sync_file: bool = True,
) -> None:
    """Write ``data`` to a temp file next to ``path``, fsync it, rename it into place, fsync the folder(s).

    Used by the writer, replication (received files) and compaction. The file is created with ``mode`` (never
    chmod-ed after). ``exclusive``: never replace a file already named ``path`` (a hard link then the temp name is
    removed; FileExistsError if the name is taken). ``sync_dir=False`` leaves the folder's fsync to a write into the
    same folder that follows at once (a signature, then its file: one folder fsync makes both names durable);
    ``sync_file=False`` does not fsync the file's bytes either (a signature document: after a crash it may be empty
    or torn, and readers treat it as missing, :mod:`storage.signing`). Raises StorageError on any other OS error,
    leaving no temporary file behind.
    """
    folder = path.parent
    tmp = folder / f"{TEMP_PREFIX}{path.stem}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        created = _make_dirs(folder)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync_file:
                os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            finally:
                _remove_quietly(tmp)
        else:
            os.rename(tmp, path)
        # The new name lives in ``folder``; each folder created here lives in its parent.
        for synced in dict.fromkeys([*([folder] if sync_dir else []), *(p.parent for p in created)]):
            fsync_path(synced)
    except FileExistsError:
        if exclusive:
            raise
        _remove_quietly(tmp)
        raise StorageError(f"cannot write segment {path}: a temporary name was taken; write again") from None
    except OSError as exc:
        # If only a folder fsync failed, the file is already whole under its name: a retry finds it identical.
        _remove_quietly(tmp)
        raise StorageError(f"cannot write segment {path}: {exc.strerror or exc}; {_hint(exc, folder)}") from exc


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created (their parents need an fsync)."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
    return missing


def _to_parquet_bytes(table: pa.Table) -> bytes:
    """Serialize ``table`` to Parquet in memory (segments are small); deterministic for the same input."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue().to_pybytes()
