"""The door of replication: what a received file must prove before it is written. Pure checks (no Flight, no disk
writes); :class:`storage.replication.Replicator` applies them in this order and counts every refusal by reason.

1. ``bad_id``: the id matches :data:`storage.layout.SEGMENT_ID_RE`, before anything else.
2. ``too_large``: at most :data:`MAX_UPLOAD_BYTES` (uploads are read batch by batch and cut off past it).
3. ``checksum``/``unreadable``: the bytes have the announced sha256 and a readable Parquet footer.
4. ``schema``, ``metadata``, ``store``, ``rows``, ``window``: :mod:`storage.bounds`, the store, the footer's row count.
5. ``token_future``: no token above etcd's current revision (when the node knows it).
6. ``unsigned``/``signature``: with an identity, a good signature of the producer (:mod:`storage.signing`).
7. Then, in the Replicator, against what is held: ``overwrite`` (never over a local file), ``expired``,
   ``superseded``, ``stale``, ``compactor`` (a compacted file signed by a node other than the pair's compactor,
   :func:`check_compactor`) and, for a compacted file that would supersede local files, ``compacted_accounting``
   (:func:`check_compacted_accounting`: runs and row counts) then ``compacted_content``
   (:func:`check_compacted_content`: its rows of the superseded files' sources are exactly the local rows, every
   column).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.errors import StorageError
from storage.bounds import Refused, check_entry, check_schema, check_ts_range
from storage.catalog import CatalogEntry, Run, entry_from_bytes
from storage.layout import parse_file_id
from storage.schema import EVENT_SCHEMA

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
        raise Refused(
            "token_future",
            f"{entry.segment_id}: token {top} is above {max_token}, the most this node allows from its last etcd read",
        )


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
    return row_counts_of(pq.read_table(pa.BufferReader(data), columns=["segment_id"]))


def row_counts_of(table: pa.Table) -> Counter[str]:
    """Rows per source ``segment_id`` of a table."""
    col = table.column("segment_id")
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
    except RecursionError:
        raise Refused("ticket", "batch ticket nested too deep to parse") from None
    if not isinstance(ids, list) or len(ids) > MAX_TICKET_IDS or not all(isinstance(i, str) for i in ids):
        raise Refused("ticket", f"batch ticket must be a list of at most {MAX_TICKET_IDS} ids")
    return ids


def compactor_of(nodes: Collection[str] | None) -> str | None:
    """The node of the pair that compacts (the first name in sorted order, as the node agent decides), or None."""
    return min(nodes) if nodes else None


def check_compactor(c: CatalogEntry, nodes: Collection[str] | None) -> None:
    """Refused(``compactor``) if ``c`` is a compacted file produced (and so signed) by a node that is not the pair's
    compactor (only it builds compacted files: :mod:`storage.compaction` rule 1). No pair known: not checked."""
    compactor = compactor_of(nodes)
    if c.compacted and compactor is not None and c.node != compactor:
        raise Refused("compactor", f"{c.segment_id} is a compacted file of {c.node}, but only {compactor} compacts")


def _canonical(table: pa.Table) -> pa.Table:
    """``table`` as EVENT_SCHEMA without metadata, its rows in a total order (every column a sort key)."""
    table = table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA).replace_schema_metadata(None)
    i = EVENT_SCHEMA.get_field_index("dwell_s")
    dwell = table.column(i)
    if pc.any(pc.is_nan(dwell)).as_py():  # NaN != NaN for equals(): a NaN compares as a null
        fixed = pc.if_else(pc.is_nan(dwell), pa.scalar(None, pa.float64()), dwell)
        table = table.set_column(i, EVENT_SCHEMA.field(i), fixed)
    if table.num_rows == 0:
        return table
    keys = [(name, "ascending") for name in ("segment_id", "seq", *EVENT_SCHEMA.names)]
    return table.take(pc.sort_indices(table, keys)).combine_chunks()


def check_compacted_content(c: CatalogEntry, data: bytes, local: Sequence[pa.Table]) -> None:
    """Refused(``compacted_content``) unless ``c`` holds exactly the rows of ``local`` (the tables of the files it
    would supersede, read here) for their source segments: compaction copies rows, every column as it was (its own
    ``segment_id``, ``seq``, ``node``, ``token``, ...), and rewrites nothing, so any difference is a forgery.

    The source ids are those of the local rows; a source held both as a segment and inside a superseded compacted file
    is counted once (the same rows). Costs one read of the superseded files and one sort of their rows.
    """
    seen: set[str] = set()
    parts: list[pa.Table] = []
    for t in sorted(local, key=lambda t: -t.num_rows):  # compacted files (many sources) first
        ids = pc.unique(t.column("segment_id")).to_pylist() if t.num_rows else []
        fresh = [i for i in ids if i not in seen]
        if len(fresh) != len(ids):
            t = t.filter(pc.is_in(t.column("segment_id"), value_set=pa.array(fresh, pa.string())))
        seen.update(fresh)
        parts.append(t.select(EVENT_SCHEMA.names).replace_schema_metadata(None))
    if not seen:
        return
    mine = _canonical(pa.concat_tables(parts)) if parts else EVENT_SCHEMA.empty_table()
    theirs = pq.read_table(pa.BufferReader(data), schema=EVENT_SCHEMA)
    theirs = _canonical(theirs.filter(pc.is_in(theirs.column("segment_id"), value_set=pa.array(sorted(seen)))))
    if theirs.num_rows != mine.num_rows or not theirs.equals(mine):
        diff = _first_difference(mine, theirs)
        raise Refused(
            "compacted_content",
            f"{c.segment_id} does not hold the events of the {len(seen)} segments it would supersede: {diff}",
            keep=True,
        )


def _first_difference(mine: pa.Table, theirs: pa.Table) -> str:
    if mine.num_rows != theirs.num_rows:
        return f"{theirs.num_rows} rows of their sources, the local files hold {mine.num_rows}"
    for name in EVENT_SCHEMA.names:
        a, b = mine.column(name), theirs.column(name)
        if not a.equals(b):
            return f"column {name} differs"
    return "rows differ"
