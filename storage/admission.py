"""The door of replication: what a received file must prove before it is written. Pure checks (no Flight, no disk
writes); :class:`storage.replication.Replicator` applies them in this order and counts every refusal by reason.

1. ``bad_id``: the id matches :data:`storage.layout.SEGMENT_ID_RE`, before anything else.
2. ``too_large``: at most :data:`MAX_UPLOAD_BYTES` (uploads are read batch by batch and cut off past it).
3. ``checksum``/``unreadable``: the bytes have the announced sha256 and a readable Parquet footer.
4. ``schema``, ``metadata``, ``store``, ``rows``, ``window``: :mod:`storage.bounds`, the store, the footer's row count.
5. ``token_future``: no token above etcd's current revision (when the node knows it).
6. ``unsigned``/``signature``: with an identity, a good signature of the producer (:mod:`storage.signing`).
7. Then, in the Replicator, against what is held: ``overwrite`` (never over a local file), ``expired``,
   ``superseded``, ``stale`` and, for a compacted file that would supersede local files, ``compacted_accounting``
   (:func:`check_compacted_accounting`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.errors import StorageError
from storage.bounds import Refused, check_entry, check_schema, check_ts_range
from storage.catalog import CatalogEntry, Run, entry_from_bytes
from storage.layout import parse_file_id

MAX_UPLOAD_BYTES = 256 << 20
"""The largest file a node receives (a month file of a busy camera is a few MiB)."""
MAX_TICKET_IDS = 1024
MAX_TICKET_BYTES = 256 << 10
_EPS = 1e-6


def check_id(segment_id: object) -> str:
    try:
        return parse_file_id(segment_id).text
    except StorageError as exc:
        raise Refused("bad_id", str(exc)) from None


def ts_range(md: pq.FileMetaData, data: bytes) -> tuple[float | None, float | None]:
    """(min, max) event timestamp in epoch seconds, from the footer's statistics (or the column if absent)."""
    names = [md.schema.column(i).name for i in range(md.num_columns)]
    if "ts" not in names or md.num_rows == 0:
        return None, None
    col = names.index("ts")
    lo: list[int] = []
    hi: list[int] = []
    for g in range(md.num_row_groups):
        stats = md.row_group(g).column(col).statistics
        if stats is None or not stats.has_min_max:
            ts = pq.read_table(pa.BufferReader(data), columns=["ts"]).column("ts").cast(pa.int64())
            mm = pc.min_max(ts)
            return _s(mm["min"].as_py()), _s(mm["max"].as_py())
        lo.append(int(stats.min_raw))
        hi.append(int(stats.max_raw))
    return _s(min(lo)), _s(max(hi))


def _s(us: int | None) -> float | None:
    return None if us is None else us / 1e6


def inspect_bytes(data: bytes, segment_id: str, sha256: str, store_id: str) -> CatalogEntry:
    """The entry of a received file once checks 1 to 4 of the module pass; Refused with the reason otherwise."""
    check_id(segment_id)
    if len(data) > MAX_UPLOAD_BYTES:
        raise Refused("too_large", f"{segment_id}: {len(data)} bytes (at most {MAX_UPLOAD_BYTES})")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise Refused("checksum", f"{segment_id}: sha256 mismatch ({len(data)} bytes)")
    try:
        md = pq.read_metadata(pa.BufferReader(data))
        schema = md.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise Refused("unreadable", f"{segment_id} is not a readable segment: {exc}") from None
    kv = md.metadata or {}
    check_schema(kv, schema, segment_id)
    try:
        entry = entry_from_bytes(data, segment_id, sha256)
    except (StorageError, TypeError, ValueError) as exc:
        raise Refused("metadata", f"{segment_id}: {exc}") from None
    if entry.store_id != store_id:
        raise Refused("store", f"{segment_id} belongs to store {entry.store_id}, not {store_id}")
    if md.num_rows != entry.rows:
        raise Refused("rows", f"{segment_id}: metadata says {entry.rows} rows, the file has {md.num_rows}")
    check_entry(entry)
    check_ts_range(*ts_range(md, data), segment_id)
    return entry


def check_token(entry: CatalogEntry, max_token: int | None) -> None:
    """Refused(``token_future``) if a token of the file is above etcd's current revision ``max_token``."""
    if max_token is None:
        return
    top = max([entry.token, *(r.token for r in entry.runs)])
    if top > max_token:
        raise Refused("token_future", f"{entry.segment_id}: token {top} is above etcd's revision {max_token}")


def supersedes(c: CatalogEntry, held: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    """The held files that the compacted file ``c`` would supersede (the rules of :mod:`storage.catalog`)."""
    out = []
    for e in held:
        if e.camera_id != c.camera_id or e.segment_id == c.segment_id:
            continue
        if e.segment_id in c.absorbed or (
            not e.compacted and any(_covers(r, e.node, e.token, e.window_start, e.window_start) for r in c.runs)
        ):
            out.append(e)
    return out


def _covers(r: Run, node: str, token: int, start: float, end: float) -> bool:
    """True if run ``r`` is of producer (node, token) and holds [start, end] (a point: ``start == end``)."""
    if r.node != node or r.token != token or r.start - _EPS > start:
        return False
    return start < r.end if start == end else end <= r.end + _EPS


def row_counts(data: bytes) -> Counter[str]:
    """Rows per source ``segment_id`` of a file held in memory."""
    col = pq.read_table(pa.BufferReader(data), columns=["segment_id"]).column("segment_id")
    return Counter({str(d["values"]): int(d["counts"]) for d in pc.value_counts(col).to_pylist()})


def check_compacted_accounting(
    c: CatalogEntry, data: bytes, targets: list[CatalogEntry], local_counts: Callable[[CatalogEntry], Counter[str]]
) -> None:
    """Refused(``compacted_accounting``) unless ``c`` holds exactly what it would supersede of ``targets``.

    Every claim (producer, token, window) of a target lies inside a run of ``c`` of the same producer and token, and
    ``c`` holds exactly the target's rows: for a segment, as many rows with its id as it has; for an absorbed
    compacted file, as many rows per source id as that file holds.
    """
    if not targets:
        return
    have = row_counts(data)
    for t in targets:
        for claim in t.claims():
            if not any(_covers(r, claim.node, claim.token, claim.start, claim.end) for r in c.runs):
                raise Refused(
                    "compacted_accounting",
                    f"{c.segment_id} would supersede {t.segment_id} but no run of it covers {claim.node}/{claim.token}"
                    f" {claim.start}..{claim.end}",
                    keep=True,
                )
        want = local_counts(t) if t.compacted else Counter({t.segment_id: t.rows})
        for sid, n in want.items():
            if have.get(sid, 0) != n:
                raise Refused(
                    "compacted_accounting",
                    f"{c.segment_id} holds {have.get(sid, 0)} events of {sid}, the local copy {n}",
                    keep=True,
                )


def parse_batch_ticket(raw: bytes) -> list[str]:
    """The ids of a batch ticket (a JSON list of strings); Refused(``ticket``) past the bounds."""
    if len(raw) > MAX_TICKET_BYTES:
        raise Refused("ticket", f"batch ticket of {len(raw)} bytes (at most {MAX_TICKET_BYTES})")
    try:
        ids = json.loads(raw)
    except ValueError as exc:
        raise Refused("ticket", f"batch ticket is not JSON: {exc}") from None
    if not isinstance(ids, list) or len(ids) > MAX_TICKET_IDS or not all(isinstance(i, str) for i in ids):
        raise Refused("ticket", f"batch ticket must be a list of at most {MAX_TICKET_IDS} ids")
    return ids
