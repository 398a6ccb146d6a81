"""Compaction: 1-second segments become one file per camera and local hour, then local day, then local month.

Rules (readers never see an event twice or not at all):

1. Only closed periods are compacted (the period ended ``min_age_s`` ago), and only by the node with
   ``compactor=True`` (the node agent passes it to one node of the pair, e.g. the first name in sorted order), so the
   pair never builds two different compacted files of one period.
2. A compacted file holds every row of its sources (all producers: crediting stays a read-time rule), keeps each
   row's own ``segment_id``/``node``/``token``, and records the sources' coverage as *runs* (contiguous windows of
   one producer, frames summed) plus the ids of compacted files it ``absorbed``. Its id is
   ``<camera>.<period start ms>.<level>~<hash of the source ids>``; it is written atomically (temp, fsync, rename).
3. From the moment it is named, the catalog treats its sources as *superseded* (:mod:`storage.catalog`) and the views
   skip them; a view created before it existed ignores it (not in its snapshot) and still reads the sources.
4. Sources are deleted only ``grace_s`` after the compacted file appeared (on each node, by :func:`compact` with any
   ``compactor`` value), so a query that started before the switch still finds its files. Deleting them does not
   make anti-entropy fetch them back: replication refuses a superseded segment.
5. A segment arriving late for a compacted period stays live beside it until the next run compacts both into a new
   file that absorbs the old one. Hour files of a closed day become one day file, and day files of a closed month
   one month file, so files per camera stay about one a month plus the open month's days and the open day's hours
   (bounded further by retention): 16 cameras keep about 16 x (12 + 31 + 24) files for a year, not 16 x 365.
6. Signatures: a compacted file is signed by the compactor (``signer``; its signature written first). Given a
   ``verifier``, compaction reads, compacts and deletes only files whose signatures verify: a file whose signature
   fails is quarantined by the scan (never deleted), an unsigned one is left where it is and counted in the report.
   Given the pair (``nodes``, the store's configured workstations), a file signed or produced by a node outside it
   counts as unsigned: it is never compacted into a new signed file (that would launder it under the compactor's
   signature) nor deleted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.errors import StorageError
from storage.catalog import COMPACT_MARK, Catalog, CatalogEntry, CatalogState, Run, runs_to_kv
from storage.layout import segment_path
from storage.schema import EVENT_SCHEMA, SegmentMeta, with_segment_meta
from storage.segments import PARQUET_COMPRESSION, load_timezone, prune_empty_dirs, warn_unsigned_once
from storage.signing import remove_with_sig, write_signed

if TYPE_CHECKING:
    from cluster.pki import Signer, Verifier

log = logging.getLogger(__name__)

LEVELS = ("hour", "day", "month")
_ALLOWED = {"hour": {"segment"}, "day": {"segment", "hour", "day"}, "month": {"segment", "hour", "day", "month"}}


@dataclass
class CompactionReport:
    """What one :func:`compact` run did."""

    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unsigned: list[str] = field(default_factory=list)
    """Files left alone because they have no good signature (only with a verifier)."""


def level_of(segment_id: str) -> str:
    """``segment``, ``hour``, ``day`` or ``month``."""
    if COMPACT_MARK not in segment_id:
        return "segment"
    return segment_id.split(".")[2].split(COMPACT_MARK)[0]


def period_start(epoch_s: float, tz_name: str, level: str) -> float:
    """Start (UTC epoch) of the local hour, local day or local month holding ``epoch_s``."""
    tz = load_timezone(tz_name)
    local = datetime.fromtimestamp(epoch_s, tz)
    if level == "hour":
        local = local.replace(minute=0, second=0, microsecond=0)
    else:
        local = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if level == "month":
            local = local.replace(day=1)
    return local.timestamp()


def period_end(start: float, tz_name: str, level: str) -> float:
    tz = load_timezone(tz_name)
    local = datetime.fromtimestamp(start, tz)
    if level == "hour":
        return start + 3600.0
    if level == "month":
        nxt = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=tz)
        return nxt.timestamp()
    nxt = (local + timedelta(days=1, hours=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    return nxt.timestamp()


def merge_runs(runs: list[Run]) -> list[Run]:
    """Merge runs of one producer that touch (end == next start) into one, frames summed."""
    out: list[Run] = []
    last: dict[tuple[str, int], int] = {}
    for r in sorted(runs, key=lambda r: (r.node, r.token, r.start)):
        k = (r.node, r.token)
        if k in last and abs(out[last[k]].end - r.start) < 1e-6:
            q = out[last[k]]
            out[last[k]] = Run(q.start, max(q.end, r.end), q.node, q.token, q.frames + r.frames)
        else:
            last[k] = len(out)
            out.append(r)
    return sorted(out, key=lambda r: (r.start, r.node, r.token))


def build_compacted(
    data_dir: Path, sources: list[CatalogEntry], *, level: str, start: float, node: str
) -> tuple[str, Path, bytes]:
    """The id, path and Parquet bytes of the compacted file of ``sources`` (one camera, one period)."""
    first = sources[0]
    ids = sorted(e.segment_id for e in sources)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    cid = f"{first.camera_id}.{round(start * 1000)}.{level}{COMPACT_MARK}{digest}"
    tables = [pq.read_table(Path(data_dir) / e.relpath, schema=EVENT_SCHEMA) for e in sources]
    table = pa.concat_tables(tables).replace_schema_metadata(None)
    if table.num_rows:
        order = pc.sort_indices(table, [("ts", "ascending"), ("segment_id", "ascending"), ("seq", "ascending")])
        table = table.take(order)
    runs = merge_runs([r for e in sources for r in e.claims()])
    absorbed = {e.segment_id for e in sources if e.compacted} | {a for e in sources for a in e.absorbed}
    meta = SegmentMeta(
        segment_id=cid,
        store_id=first.store_id,
        camera_id=first.camera_id,
        window_start=min(e.window_start for e in sources),
        window_end=max(e.window_end for e in sources),
        frames=sum(e.frames for e in sources),
        node=node,
        token=max(e.token for e in sources),
        rows=table.num_rows,
        config_version="compacted",
        model_version="compacted",
        timezone=first.timezone,
    )
    table = with_segment_meta(table, meta)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **runs_to_kv(runs, absorbed)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, row_group_size=1 << 20)
    path = segment_path(Path(data_dir), first.store_id, first.camera_id, start, load_timezone(first.timezone), cid)
    return cid, path, sink.getvalue().to_pybytes()


def _groups(
    state: CatalogState, level: str, now: float, min_age_s: float, trusted: set[str] | None = None
) -> dict[tuple[str, float], list[CatalogEntry]]:
    allowed = _ALLOWED[level]
    groups: dict[tuple[str, float], list[CatalogEntry]] = defaultdict(list)
    for e in state.live():
        if level_of(e.segment_id) not in allowed or (trusted is not None and e.segment_id not in trusted):
            continue
        start = period_start(e.window_start, e.timezone, level)
        end = period_end(start, e.timezone, level)
        if e.window_end > end + 1e-6 or end > now - min_age_s:
            continue
        groups[(e.camera_id, start)].append(e)
    if level == "hour":
        # an hour file already there for the period joins its late segments
        for e in state.live():
            if level_of(e.segment_id) == "hour" and (trusted is None or e.segment_id in trusted):
                key = (e.camera_id, period_start(e.window_start, e.timezone, "hour"))
                if key in groups:
                    groups[key].append(e)
    return groups


def compact(
    data_dir: Path,
    *,
    node: str,
    now: float | None = None,
    compactor: bool = True,
    min_age_s: float = 300.0,
    day_min_age_s: float = 3600.0,
    month_min_age_s: float = 86400.0,
    grace_s: float = 600.0,
    max_groups: int = 10_000,
    signer: Signer | None = None,
    verifier: Verifier | None = None,
    nodes: Collection[str] | None = None,
) -> CompactionReport:
    """Delete sources superseded for longer than ``grace_s``; if ``compactor``, compact closed hours, days, months.

    Idempotent and safe to run periodically on both nodes (see the module rules). Errors on one group are logged
    and reported; the others go on. ``signer`` signs the files written; with ``verifier``, only files whose
    signatures verify are compacted or deleted (rule 6); ``nodes`` (the pair) excludes files of other nodes too.
    """
    now = time.time() if now is None else now
    report = CompactionReport()
    catalog = Catalog(data_dir, node=node, verifier=verifier, nodes=nodes)
    state = catalog.scan()
    trusted = state.signed if verifier is not None else None
    if trusted is not None:
        report.unsigned = state.unsigned()
        if report.unsigned:
            log.warning(
                "node %s: %d files have no good signature and are neither compacted nor deleted (see edgepair verify)",
                node,
                len(report.unsigned),
            )
    if signer is None and compactor:
        warn_unsigned_once(node, "compacted files")
    for old, new in sorted(state.superseded.items()):
        if trusted is not None and (old not in trusted or new not in trusted):
            continue
        new_path = Path(data_dir) / state.entries[new].relpath
        try:
            if time.time() - new_path.stat().st_mtime < grace_s:  # file times are wall-clock
                continue
            remove_with_sig(Path(data_dir) / state.entries[old].relpath)
        except OSError as exc:
            report.errors.append(f"{old}: {exc}")
            continue
        report.deleted.append(old)
    if report.deleted:
        pruned = prune_empty_dirs(data_dir, [state.entries[old].relpath for old in report.deleted])
        log.info("node %s: deleted %d superseded files (%d empty folders)", node, len(report.deleted), pruned)
    if not compactor:
        return report
    for level, age in (("hour", min_age_s), ("day", day_min_age_s), ("month", month_min_age_s)):
        state = catalog.scan()
        trusted = state.signed if verifier is not None else None
        done = 0
        for (camera, start), sources in sorted(_groups(state, level, now, age, trusted).items()):
            if (len(sources) == 1 and sources[0].compacted) or done >= max_groups:
                continue
            done += 1
            try:
                cid, path, data = build_compacted(data_dir, sources, level=level, start=start, node=node)
                if not path.exists():
                    write_signed(path, data, hashlib.sha256(data).hexdigest(), cid, signer=signer)
            except (StorageError, OSError, pa.ArrowException) as exc:
                log.error("node %s: camera %s: cannot compact %s at %s: %s", node, camera, level, start, exc)
                report.errors.append(f"{camera}@{start}: {exc}")
                continue
            report.written.append(cid)
            log.info("node %s: camera %s: compacted %d files into %s", node, camera, len(sources), cid)
    return report
