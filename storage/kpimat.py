"""Materialised KPI days: what they are, how staleness is told, and how the views read them.

The node's housekeeping (:mod:`storage.kpibuild`) writes, beside ``events/``, the rows of every KPI view of
:data:`storage.kpisql.KPI_VIEW_NAMES` for each *closed* local day, one *block* per local month::

    data_dir/kpi/<YYYY-MM>.<hash>/block.json           store, time zone, {local date: fingerprint}, {view: sha256}
    data_dir/kpi/<YYYY-MM>.<hash>/block.sig            the node's signature of block.json (as a segment's)
    data_dir/kpi/<YYYY-MM>.<hash>/<view>.parquet       the view's rows of those days (its own columns)

Rules:

- A day's *fingerprint* (:func:`fingerprints`) is a hash of everything its rows depend on: the format of the files
  (:data:`MAT_FORMAT`) and a hash of the views' SQL, the store, its time zone, lines and zones, the KPI definition
  versions in force on D-1, D and D+1, and the credited and outranked time pieces of every camera (producer, token,
  start, end: from the catalog, so a late segment replicated after a failover gap, or a split-brain producer,
  changes it) clipped to D-1..D+1 (``DAYS_AFTER`` of :mod:`storage.kpisql`: what a day's visits can reach, given
  ``MAX_VISIT_S``). The layout of the files (1-second segments, hour, day or month files) does not enter it, so
  compaction changes nothing.
  This assumes what the writer does: an event lies in (or within a day of) its segment's window, so a segment's
  events change only days whose fingerprint its claim changes.
- Blocks are immutable: written under a temporary name, fsynced and renamed; the hash in the name is that of their
  day map. A newer block of a month replaces an older one, which is deleted after a grace period.
- Blocks are checked like segments: ``block.json`` lists every view file's sha256 and the node signs ``block.json``
  (``block.sig``, id ``kpi/<folder>``, :meth:`cluster.pki.Signer.sign`). A reader reads a block only when every file
  matches its checksum and, when it has the store's CA (every analyst command given a store config with TLS), when
  the signature is good and its signer one of the store's workstations; any other block is left out with a warning
  and its days are computed from the events (a forged or damaged block costs speed, never a wrong number).
- A reader copies the fresh days' rows into tables of its connection (or of the analyst's file) when it builds its
  views: the views never name a block's files, so the node replacing or deleting a block cannot break them.
- A reader (:func:`attach_materialised`) computes the fingerprints of its own snapshot and, per month, uses the block
  with the most matching days. A day is *fresh* when its fingerprint matches and it is within the dataset's days; the
  views then read the fresh days' rows from the block and compute every other day (missing, stale, today) from the
  raw events, restricted to those days and their neighbours (:mod:`storage.kpisql`). Nothing is ever read from a
  stale day: a changed definition or late data gives a different fingerprint, so the day is recomputed, never wrong.
- Like the catalog, freshness is a snapshot taken when the views are built; days after the last fresh one are
  always computed live, so data written since is seen.
- Cost: a query reads the fresh days' rows and computes only the live part (the days before the first fresh one,
  the stale ones, the days after the last fresh one), whose scans are restricted to its windows: events by time
  range, and the processed time clipped to the windows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from storage.analytics import register_table as _register
from storage.kpis import DefinitionRecord, StoreSetup, definition_periods
from storage.kpisql import DAYS_AFTER, KPI_SCHEMA, KPI_VIEW_NAMES, Names, create_kpi_views, sql_digest
from storage.sandbox import KPI_DIR
from storage.segments import sha256_file
from storage.signing import MAX_SIG_BYTES
from storage.sqltext import literal as _literal
from storage.views import INTERNAL_SCHEMA

if TYPE_CHECKING:
    from cluster.pki import Verifier

log = logging.getLogger(__name__)

MAT_FORMAT = 3
"""Bump when the files' format changes (the SQL of the views is in every fingerprint, :func:`storage.kpisql.sql_digest`:
a change of it makes every materialised day stale and rebuilt by itself)."""
BLOCK_FILE = "block.json"
BLOCK_SIG = "block.sig"
MAT_SCHEMA = "_kpi_mat"
LIVE_SCHEMA = "_kpi_live"
DAY = timedelta(days=1)
AFTER = (DAYS_AFTER + 1) * DAY
"""From a day's start to the end of what its rows depend on (D+DAYS_AFTER)."""

Piece = tuple[str, str, int, int, int]
"""camera, node, token, start us, end us (UTC)."""


def day_start(d: date, tz: ZoneInfo) -> int:
    """The UTC epoch (s) of local midnight of ``d`` (the first instant of the day on a DST change)."""
    return int(datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC).timestamp())


def ts_literal(epoch_s: int) -> str:
    """A ``TIMESTAMPTZ`` literal of a UTC epoch."""
    return f"TIMESTAMPTZ '{datetime.fromtimestamp(epoch_s, UTC).strftime('%Y-%m-%d %H:%M:%S')}+00'"


@dataclass(frozen=True)
class BlockTrust:
    """What a reader checks a block with: ``verifier`` (the store's CA) and ``nodes`` (the store's workstations);
    ``use_blocks`` False when blocks are signed but nothing here can check them (no CA): every day is computed."""

    verifier: Verifier | None = None
    nodes: tuple[str, ...] | None = None
    use_blocks: bool = True


@dataclass(frozen=True)
class Block:
    """One month of materialised days, with the bytes of its view files as they were checked (``data``): readers
    load the rows from those bytes, never from the files again (a file swapped after the check changes nothing)."""

    path: Path
    month: str
    days: dict[date, str]
    mtime: float
    data: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def table(self, view: str) -> pa.Table:
        return pq.read_table(pa.BufferReader(self.data[view]))


def block_id(folder: Path) -> str:
    """The id a block's signature names: ``kpi/<folder name>``."""
    return f"{KPI_DIR}/{folder.name}"


MAX_VIEW_BYTES = 512 * 1024 * 1024
"""The largest view file a reader takes (a month of one view; a year of 16 cameras holds a few MiB a month)."""
MAX_META_BYTES = 16 * 1024 * 1024


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (not a link, a FIFO or a device: ValueError), at most ``limit``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{path.name} is {st.st_size} bytes, more than {limit}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{path.name} is more than {limit} bytes")
    return data


def _file_hashes(folder: Path) -> dict[str, str]:
    """The sha256 of each view file the node has just written (:mod:`storage.kpibuild`)."""
    return {v: sha256_file(folder / f"{v}.parquet") for v in KPI_VIEW_NAMES}


def _check_block(
    folder: Path, raw: bytes, meta: dict, verifier: Verifier | None, nodes: Collection[str] | None
) -> dict[str, bytes]:
    """The bytes of every view file, read once, when each has the sha256 that ``block.json`` lists and, with
    ``verifier``, the block's signature (``block.sig``) is good, by a workstation of ``nodes`` when given (module
    rules); ValueError otherwise."""
    listed = meta.get("files")
    if not isinstance(listed, dict):
        raise ValueError("block.json lists no file checksums (written by an older release)")
    data: dict[str, bytes] = {}
    for v in KPI_VIEW_NAMES:  # a file changed or cut short (a torn copy, a disk that failed)
        data[v] = read_limited(folder / f"{v}.parquet", MAX_VIEW_BYTES)
        if listed.get(v) != hashlib.sha256(data[v]).hexdigest():
            raise ValueError(f"{v}.parquet does not match its checksum in {BLOCK_FILE}")
    if verifier is None:
        return data
    from cluster.pki import PKIError

    try:
        doc = read_limited(folder / BLOCK_SIG, MAX_SIG_BYTES)
    except FileNotFoundError:
        raise ValueError(f"not signed ({BLOCK_SIG} missing)") from None
    try:
        signer = verifier.verify(doc, block_id(folder), hashlib.sha256(raw).hexdigest())
    except PKIError as exc:
        raise ValueError(f"bad signature: {exc}") from None
    if nodes is not None and signer not in nodes:
        raise ValueError(f"signed by {signer}, not a workstation of this store ({', '.join(sorted(nodes))})")
    return data


def check_block_folder(folder: Path, verifier: Verifier | None, nodes: Collection[str] | None) -> str:
    """Why the block ``folder`` would be left out by a reader with ``verifier`` (checksums, signature), or ""."""
    try:
        raw = read_limited(folder / BLOCK_FILE, MAX_META_BYTES)
        meta = json.loads(raw)
        fmt = meta.get("format") if isinstance(meta, dict) else "?"
        if fmt != MAT_FORMAT:
            return f"format {fmt}, not {MAT_FORMAT} (the node replaces it)"
        _check_block(folder, raw, meta, verifier, nodes)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return str(exc)
    return ""


def read_blocks(
    data_dir: Path, setup: StoreSetup, *, verifier: Verifier | None = None, nodes: Collection[str] | None = None
) -> list[Block]:
    """The blocks under ``data_dir/kpi`` of this store and zone whose files match their checksums and, with
    ``verifier``, whose signature is good (module rules); the others are left out with a warning."""
    root = Path(data_dir) / KPI_DIR
    out: list[Block] = []
    for folder in sorted(root.glob("*.*")) if root.is_dir() else []:
        if folder.name.startswith("."):
            continue
        try:
            raw = read_limited(folder / BLOCK_FILE, MAX_META_BYTES)
            meta = json.loads(raw)
            if meta["format"] != MAT_FORMAT or (meta["store_id"], meta["timezone"]) != (setup.store_id, setup.timezone):
                continue
            days = {date.fromisoformat(d): str(fp) for d, fp in meta["days"].items()}
            if not all((folder / f"{v}.parquet").is_file() for v in KPI_VIEW_NAMES):
                raise ValueError("a view's file is missing")
            data = _check_block(folder, raw, meta, verifier, nodes)
            out.append(Block(folder, str(meta["month"]), days, (folder / BLOCK_FILE).stat().st_mtime, data))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, pa.ArrowException) as exc:
            log.warning("materialised KPI block %s left out (%s): its days are computed from the events", folder, exc)
    return out


def best_blocks(blocks: Iterable[Block], fps: dict[date, str]) -> dict[str, Block]:
    """Per month, the block with the most days matching ``fps`` (a tie: the newest)."""
    best: dict[str, tuple[int, float, Block]] = {}
    for b in blocks:
        key = (sum(1 for d, fp in b.days.items() if fps.get(d) == fp), b.mtime)
        if b.month not in best or key > best[b.month][:2]:
            best[b.month] = (*key, b)
    return {m: t[2] for m, t in best.items()}


def snapshot_pieces(con: duckdb.DuckDBPyConnection) -> tuple[list[Piece], list[Piece]]:
    """The credited and outranked pieces of the snapshot that :func:`storage.views.create_views` loaded on ``con``."""

    def read(name: str) -> list[Piece]:
        rows = con.execute(
            f"SELECT camera_id, node, token, epoch_us(p_start), epoch_us(p_end) FROM {INTERNAL_SCHEMA}.{name}"
        ).fetchall()
        return sorted((str(c), str(n), int(t), int(a), int(b)) for c, n, t, a, b in rows)

    return read("credited"), read("lost")


def day_range(con: duckdb.DuckDBPyConnection) -> tuple[date, date, str, str] | None:
    """The first and last local day of the processed time (every credited event lies in it, so the recomputed
    views' days hold these), and its bounds as TIMESTAMPTZ SQL; None when there is none. Read from the claims, not
    from the events: no scan of the events. A day outside it is never fresh, so computed from the events."""
    row = con.execute(
        f"SELECT CAST(timezone(s.timezone, b.lo) AS DATE), CAST(timezone(s.timezone, b.hi) AS DATE),"
        f" CAST(epoch_us(b.lo) AS BIGINT), CAST(epoch_us(b.hi) AS BIGINT)"
        f" FROM (SELECT store_id, min(p_start) AS lo, max(p_end) AS hi FROM {KPI_SCHEMA}.cov_pieces GROUP BY ALL) b"
        f" JOIN stores s USING (store_id) WHERE b.lo IS NOT NULL"
    ).fetchone()
    if row is None:
        return None
    lo = f"(to_timestamp(0) + to_microseconds(CAST({int(row[2])} AS BIGINT)))"
    hi = f"(to_timestamp(0) + to_microseconds(CAST({int(row[3])} AS BIGINT)))"
    return row[0], row[1], lo, hi


def _versions(history: list[DefinitionRecord], timezone: str) -> list[tuple[date, date | None, str]]:
    return [(start, end, rec.version) for rec, start, end in definition_periods(history, timezone)]


def _version_on(periods: list[tuple[date, date | None, str]], d: date) -> str:
    for start, end, version in periods:
        if start <= d and (end is None or d < end):
            return version
    return "-"


def fingerprints(
    days: Iterable[date],
    setup: StoreSetup,
    history: list[DefinitionRecord],
    credited: list[Piece],
    lost: list[Piece],
) -> dict[date, str]:
    """The fingerprint of each of ``days`` (module rules)."""
    tz = ZoneInfo(setup.timezone)
    periods = _versions(history, setup.timezone)
    lines = sorted([ln.camera_id, ln.line_id, ln.kind] for ln in setup.lines)
    static = [MAT_FORMAT, sql_digest(), setup.store_id, setup.timezone, lines,
              sorted([z.camera_id, z.zone_id] for z in setup.zones)]  # fmt: skip
    out: dict[date, str] = {}
    for d in days:
        lo, hi = day_start(d - DAY, tz) * 1_000_000, day_start(d + AFTER, tz) * 1_000_000

        def clip(ps: list[Piece], lo: int = lo, hi: int = hi) -> list[list[object]]:
            return [[c, n, t, max(a, lo), min(b, hi)] for c, n, t, a, b in ps if a < hi and b > lo]

        versions = [_version_on(periods, d + i * DAY) for i in range(-1, DAYS_AFTER + 1)]
        text = json.dumps([static, versions, clip(credited), clip(lost)], separators=(",", ":"))
        out[d] = hashlib.sha256(text.encode()).hexdigest()[:24]
    return out


def all_days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Maximal runs of consecutive days, as (first, last)."""
    out: list[tuple[date, date]] = []
    for d in sorted(days):
        if out and d == out[-1][1] + DAY:
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def day_ranges(
    day_runs: list[tuple[date | None, date | None]], tz: ZoneInfo
) -> tuple[tuple[str | None, str | None], ...]:
    """The UTC ranges (TIMESTAMPTZ SQL) of runs of local days (None: open-ended), for :class:`Names` ``ranges``."""
    return tuple(
        (
            ts_literal(day_start(a, tz)) if a is not None else None,
            f"({ts_literal(day_start(b + DAY, tz))} - INTERVAL 1 MICROSECOND)" if b is not None else None,
        )
        for a, b in day_runs
    )


def merge_windows(windows: list[tuple[int | None, int | None]]) -> list[tuple[int | None, int | None]]:
    """``windows`` (UTC epoch s, None: open-ended) merged where they overlap or touch, sorted, disjoint."""
    merged: list[tuple[int | None, int | None]] = []
    for a, b in sorted(windows, key=lambda w: -1 if w[0] is None else w[0]):
        last = merged[-1] if merged else None
        if last is not None and (last[1] is None or (a is not None and a <= last[1])):
            merged[-1] = (last[0], None if last[1] is None or b is None else max(last[1], b))
        else:
            merged.append((a, b))
    return merged


def _within(a: int | None, b: int | None, lo: str, hi: str) -> str:
    """SQL: ``[lo, hi)`` overlaps the window ``[a, b)`` (``lo = hi``: a point in it)."""
    conds = ([f"{hi} {'>=' if lo == hi else '>'} {ts_literal(a)}"] if a is not None else []) + (
        [f"{lo} < {ts_literal(b)}"] if b is not None else []
    )
    return " AND ".join(conds) or "true"


def _events_in(windows: list[tuple[int | None, int | None]]) -> str:
    """The events within ``windows``: one scan per window (disjoint once merged), so that each range filter reaches
    the Parquet reader and skips the files and row groups outside it (an OR of ranges is applied after reading every
    row)."""
    scans = [f"SELECT * FROM events WHERE {_within(a, b, 'ts', 'ts')}" for a, b in merge_windows(windows)]
    return " UNION ALL ".join(scans) or "SELECT * FROM events WHERE false"


def create_restricted_views(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    target: str,
    windows: list[tuple[int | None, int | None]],
    extra_bounds: str,
    ranges: tuple[tuple[str | None, str | None], ...],
    slot_windows: list[tuple[int | None, int | None]] | None = None,
) -> None:
    """KPI views in ``schema`` for the days where ``target`` holds, over the events and processed time within
    ``windows`` (UTC epoch s, None: open-ended), each window holding the target days and their neighbours; the local
    days are generated only within ``ranges`` (disjoint, holding the target days). ``slot_windows`` (default:
    ``windows``): the windows of the views built on the slots (:class:`Names` ``slot_events``), when the visits need
    more (the day before the first processed one)."""
    slot_windows = windows if slot_windows is None else slot_windows
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.execute(f"CREATE OR REPLACE VIEW {schema}.events_in AS {_events_in(windows)}")
    slot_events = f"{schema}.events_in"
    if merge_windows(slot_windows) != merge_windows(windows):
        slot_events = f"{schema}.slot_events_in"
        con.execute(f"CREATE OR REPLACE VIEW {slot_events} AS {_events_in(slot_windows)}")
    # The processed time clipped to each window: the slots of the target days lie inside the windows (whose bounds
    # are local midnights, so slot edges), and the first and last instants stay those of the whole dataset (the
    # windows reach them or ``extra_bounds`` holds them), so the rows are the same; without the clip every piece
    # that overlaps a window (a compacted month: a whole year of slots) was cut into slots on every query.
    clipped = [
        f"SELECT store_id, camera_id, {'p_start' if a is None else f'greatest(p_start, {ts_literal(a)})'} AS p_start,"
        f" {'p_end' if b is None else f'least(p_end, {ts_literal(b)})'} AS p_end"
        f" FROM {KPI_SCHEMA}.cov_pieces WHERE {_within(a, b, 'p_start', 'p_end')}"
        for a, b in merge_windows(slot_windows)
    ]
    none = f"SELECT store_id, camera_id, p_start, p_end FROM {KPI_SCHEMA}.cov_pieces WHERE false"
    con.execute(f"CREATE OR REPLACE VIEW {schema}.cov_pieces AS {' UNION ALL '.join(clipped) or none}")
    create_kpi_views(
        con,
        Names(
            k=schema,
            p=f"{schema}.",
            events=f"{schema}.events_in",
            target=target,
            extra_bounds=extra_bounds,
            ranges=ranges,
            slot_events=slot_events,
        ),
    )


def attach_materialised(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    setup: StoreSetup,
    history: list[DefinitionRecord],
    trust: BlockTrust | None = None,
) -> int:
    """Create the KPI views of ``con`` that read the fresh materialised days and compute the others; return the
    number of fresh days (0: no view is created, the caller creates the recomputed ones). The recomputed views are
    not created first: binding them costs as much as the live part's.
    ``trust``: what the blocks are checked with (:func:`read_blocks`; default: their checksums only)."""
    trust = trust or BlockTrust()
    if not trust.use_blocks:
        return 0
    blocks = read_blocks(data_dir, setup, verifier=trust.verifier, nodes=trust.nodes)
    rng = day_range(con) if blocks else None
    if rng is None:
        return 0
    first, last, lo, hi = rng
    credited, lost = snapshot_pieces(con)
    fps = fingerprints(all_days(first, last), setup, history, credited, lost)
    chosen = best_blocks(blocks, fps)
    fresh = sorted(d for b in chosen.values() for d, fp in b.days.items() if fps.get(d) == fp)
    if not fresh:
        return 0
    files = [b for b in chosen.values() if any(fps.get(d) == fp for d, fp in b.days.items())]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {MAT_SCHEMA}")
    _register(con, f"{MAT_SCHEMA}.fresh", pa.table({"local_date": pa.array(fresh, pa.date32())}))
    tz = ZoneInfo(setup.timezone)
    fset = set(fresh)
    inner = [d for d in all_days(fresh[0], fresh[-1]) if d not in fset]
    # The days before the first fresh one are computed even when the first day of the snapshot is fresh: a visit
    # whose exit lies in the first day can have entered the day before (it is dated by its entry). The views built
    # on the slots have no day before the first one then (every event and processed instant lies in the snapshot's
    # days, :func:`day_range`), so they do not read that window: it was most of the cost of a query.
    head: list[tuple[int | None, int | None]] = [(None, day_start(fresh[0] - DAY + AFTER, tz))]
    middle = [(day_start(a - DAY, tz), day_start(b + AFTER, tz)) for a, b in runs(inner)]
    tail: list[tuple[int | None, int | None]] = [(day_start(fresh[-1], tz), None)]
    windows = head + middle + tail
    store = _literal(setup.store_id)
    create_restricted_views(
        con,
        LIVE_SCHEMA,
        f"local_date NOT IN (SELECT local_date FROM {MAT_SCHEMA}.fresh)",
        windows,
        f" UNION ALL SELECT {store}, {lo}, {hi}",
        day_ranges([(None, fresh[0] - DAY), *runs(inner), (fresh[-1] + DAY, None)], tz),
        slot_windows=windows if fresh[0] > first else middle + tail,
    )
    _copy_fresh_rows(con, files)
    log.info(
        "store %s: %d materialised KPI days read from %s (%d blocks), the others computed from the events",
        setup.store_id,
        len(fresh),
        Path(data_dir) / KPI_DIR,
        len(files),
    )
    return len(fresh)


def _copy_fresh_rows(con: duckdb.DuckDBPyConnection, files: list[Block]) -> None:
    """Each KPI view as the fresh days' rows (copied from the checked blocks) plus the live part computed."""
    # The live views' column types as DuckDB stored them when it created them (a DESCRIBE would bind them again).
    types: dict[str, list[tuple[str, str]]] = {}
    for v, c, t in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE schema_name = ? ORDER BY column_index",
        [LIVE_SCHEMA],
    ).fetchall():
        types.setdefault(str(v), []).append((str(c), str(t)))
    # The fresh days' rows are copied into tables of ``con`` (of the analyst's file, for ``analytics open``): the
    # node replaces a month's block every day and deletes the old one later, so a view naming the block's files
    # would fail in a long session or a file opened the next day; copied, they stay what was checked above.
    for view in KPI_VIEW_NAMES:
        cols = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in types[view])
        rows = pa.concat_tables([b.table(view) for b in files], promote_options="permissive")  # the checked bytes
        con.register("_kpi_mat_rows", rows)
        try:
            con.execute(
                f"CREATE OR REPLACE TABLE {MAT_SCHEMA}.{view} AS SELECT {cols} FROM _kpi_mat_rows"
                f" WHERE local_date IN (SELECT local_date FROM {MAT_SCHEMA}.fresh)"
            )
        finally:
            con.unregister("_kpi_mat_rows")
        con.execute(
            f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {MAT_SCHEMA}.{view}"
            f" UNION ALL SELECT * FROM {LIVE_SCHEMA}.{view}"
        )
