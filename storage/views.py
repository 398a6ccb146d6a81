"""DuckDB views over the event segments, for analysts. Read only; never sees writers' temporary files.

Views (times in UTC are ``TIMESTAMPTZ``; ``*_local`` are plain ``TIMESTAMP`` in the store's time zone):

- ``segments_raw``: every column of every segment file, plus the hive partitions ``store``, ``date`` (local date of
  the window start), ``camera`` and ``filename``. Raw: superseded and uncredited rows included (do not count it).
- ``events_audit``: the rows of every *visible* file (not superseded by compaction) with ``credited``: true for the
  one producer credited for that camera and instant (highest fencing token, tie: greatest node name; see
  :mod:`storage.catalog`), false for the others (handover overlap, split brain).
- ``events``: the credited rows only, each event exactly once: the segment columns plus ``ts_local``, ``local_date``,
  ``local_hour``. ``visits``, ``traffic_hourly`` and ``zone_dwell`` are built on it.
- ``visits``: one row per zone visit (from ``zone_exit`` events; enter = exit - dwell).
- ``traffic_hourly``: line crossings in and out per camera, line, local date and local hour.
- ``zone_dwell``: visits and mean/median/p90 dwell per camera and zone.
- ``segment_meta``: one row per visible file from the Parquet metadata, zero-event segments included.
- ``windows``: one row per claim (a segment's window, or a run of a compacted file): camera, window, node, token,
  frames, ``credited`` (never outranked), ``credited_s``.
- ``coverage``: per camera, local date, local hour and UTC offset (the repeated hour of an autumn DST day is two
  rows), the seconds processed (credited claims, so overlaps count once), ``hour_s`` (the hour's real length),
  ``share`` of the hour (0..1) and the ``nodes`` that processed them: a failover gap shows as share < 1. Computed on
  15-minute UTC slots like the KPI ``coverage`` (:mod:`storage.localtime`), so DST days are exact.

Speed: local times are computed by :func:`storage.localtime.local_ts_sql` (offsets known in advance, no per-row time
zone lookup), and when the snapshot has no outranked claim at all (the usual case) ``events_audit`` marks every
visible row credited without joining the rows to the lost pieces.

Snapshot rule: which files are superseded and which claims are outranked is computed from the catalog when the views
are created. A file that appears later is read if it is a plain segment (treated as credited) and ignored if it is a
compacted file (its sources stay on disk for the compaction grace period, so nothing is lost or seen twice). A
connection kept open longer than the grace period must call :func:`create_views` again; :func:`run_query` uses a
fresh connection per query.

The file glob is expanded again by every query, so segments written after the views were created are seen; only
views created while there was no segment at all stay empty until :func:`create_views` runs again (it is cheap, or
open a fresh connection). DuckDB's ICU extension (``AT TIME ZONE``) is statically linked in
the duckdb wheel, so nothing is downloaded; extension auto-install is switched off so that nothing ever tries.

Read only: the views never write or move anything in the data dir. :func:`scan_readonly` takes the snapshot without
:class:`storage.catalog.Catalog` (whose scan saves ``catalog/index.json`` and quarantines corrupt files): it reads
the node's index if there is one, reads the footers of files not in it in memory (no hashing), and leaves out, with
one warning line each, a file whose footer cannot be read, that is impossible (:mod:`storage.bounds`) or whose name
is not valid UTF-8. When a file was left out, the views read the snapshot's list of files instead of the glob (the
glob would match the bad file and break every query), so files written later are seen only by a fresh connection.
:func:`open_dataset` locks the connection once the views exist (:mod:`storage.sandbox`) and :func:`run_query` runs
exactly one read-only statement.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.errors import QueryError, StorageError
from storage.bounds import check_entry
from storage.catalog import (
    CATALOG_DIR,
    COMPACT_MARK,
    INDEX_NAME,
    CatalogEntry,
    CatalogState,
    compute_superseded,
    credit_pieces,
    entry_from_file,
)
from storage.localtime import cov_slots_sql, local_ts_sql, slots_sql
from storage.sandbox import check_statement, lock_down, one_line, query_error
from storage.schema import EVENT_SCHEMA, SegmentMeta
from storage.segments import EVENTS_DIR, is_temp_file, load_timezone
from storage.sqltext import literal as _literal

log = logging.getLogger(__name__)

VIEW_NAMES = (
    "segments_raw",
    "events_audit",
    "events",
    "visits",
    "traffic_hourly",
    "zone_dwell",
    "segment_meta",
    "windows",
    "coverage",
)
INTERNAL_SCHEMA = "_edgepair"
PARQUET_CACHE = "SET parquet_metadata_cache = true"
"""Keep the Parquet footers read by a connection: a KPI query reads the same files' footers several times (the views
are inlined), and a named file never changes (segments are immutable once named; compaction writes new names)."""

_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.float64(): "DOUBLE",
}
_HIVE_TYPES = "{'store': VARCHAR, 'date': DATE, 'camera': VARCHAR}"
_META_TYPES = {
    "window_start": "DOUBLE",
    "window_end": "DOUBLE",
    "frames": "BIGINT",
    "token": "BIGINT",
    "rows": "BIGINT",
}


def segment_glob(data_dir: Path, root: str | None = None) -> str:
    """The glob of every named segment; ``*.parquet`` never matches a temporary ``.<name>.tmp`` file.

    ``root``: how SQL names ``data_dir`` (default: its absolute path; a relative one for a portable file)."""
    root = root if root is not None else str(Path(data_dir).resolve())
    return f"{root}/{EVENTS_DIR}/store=*/date=*/camera=*/*.parquet"


def has_segments(data_dir: Path) -> bool:
    """True when ``data_dir`` holds at least one segment (an empty or missing folder: False)."""
    return _has_segments(data_dir)


def has_events(data_dir: Path) -> bool:
    """True when a segment under ``data_dir`` holds at least one event row. Read only and cheap: the row counts of
    the node's catalog index, then the footers of the files not in it, stopping at the first file with a row."""
    data_dir = Path(data_dir)
    root = data_dir / EVENTS_DIR
    cache = _read_index(data_dir)
    unindexed: list[Path] = []
    for path in sorted(root.glob("store=*/date=*/camera=*/*.parquet")) if root.is_dir() else []:
        if is_temp_file(path):
            continue
        cached = cache.get(str(path.relative_to(data_dir)))
        try:
            st = path.stat()
        except OSError:
            continue  # removed since the listing (compaction, retention)
        if cached is None or (cached[0], cached[1]) != (st.st_size, st.st_mtime_ns):
            unindexed.append(path)
        elif cached[2].rows > 0:
            return True
    for path in unindexed:
        try:
            if pq.read_metadata(path).num_rows > 0:
                return True
        except (OSError, ValueError, pa.ArrowException):  # ValueError: a name that is not UTF-8
            continue  # left out of the views with a warning (scan_readonly)
    return False


def _has_segments(data_dir: Path) -> bool:
    root = Path(data_dir) / EVENTS_DIR
    return root.is_dir() and next(root.glob("store=*/date=*/camera=*/*.parquet"), None) is not None


def _segments_raw_sql(source: str | None) -> str:
    if source is not None:
        return (
            f"SELECT * FROM read_parquet({source}, hive_partitioning = true,"
            f" hive_types = {_HIVE_TYPES}, filename = true)"
        )
    # No file yet: the same columns, zero rows (read_parquet raises on a glob that matches nothing).
    cols = [f"CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS {f.name}" for f in EVENT_SCHEMA]
    cols += ["CAST(NULL AS VARCHAR) AS filename", "CAST(NULL AS VARCHAR) AS camera"]
    cols += ["CAST(NULL AS DATE) AS date", "CAST(NULL AS VARCHAR) AS store"]
    return f"SELECT {', '.join(cols)} WHERE false"


def _segment_meta_sql(source: str | None, tz: str, guard: str = "") -> str:
    names = list(SegmentMeta.__dataclass_fields__)
    if source is not None:
        picks = ", ".join(
            f"max(decode(value)) FILTER (WHERE decode(key) = 'edgepair.{name}') AS {name}" for name in names
        )
        source = f"SELECT file_name AS filename, {picks} FROM parquet_kv_metadata({source}) GROUP BY file_name"
    else:
        source = "SELECT CAST(NULL AS VARCHAR) AS filename, " + ", ".join(
            f"CAST(NULL AS VARCHAR) AS {name}" for name in names
        )
        source += " WHERE false"
    typed = ", ".join(f"CAST({name} AS {_META_TYPES.get(name, 'VARCHAR')}) AS {name}" for name in names)
    return f"""
        WITH m AS (SELECT filename, {typed} FROM ({source}))
        SELECT segment_id, store_id, camera_id,
               to_timestamp(window_start) AS window_start,
               to_timestamp(window_end) AS window_end,
               to_timestamp(window_start) AT TIME ZONE {tz} AS window_start_local,
               to_timestamp(window_end) AT TIME ZONE {tz} AS window_end_local,
               window_end - window_start AS covered_s,
               frames, rows, node, token, config_version, model_version, timezone, filename
        FROM m
        WHERE {_VISIBLE.format(alias="m")}{guard}
    """


_VISIBLE = (
    "coalesce((SELECT f.live FROM " + INTERNAL_SCHEMA + ".files f WHERE f.filename = {alias}.filename),"
    " NOT contains({alias}.filename, '" + COMPACT_MARK + "'))"
)
_TS = pa.timestamp("us", tz="UTC")


def _us(t: float) -> int:
    return round(t * 1_000_000)


_LOCAL_PAST_S = 2 * 86400.0
_LOCAL_AHEAD_S = 400 * 86400.0


def _local_range(state: CatalogState) -> tuple[float, float]:
    """The UTC range whose offsets are written into the local-time SQL: the data held, up to 400 days from now."""
    now = time.time()
    starts = [e.window_start for e in state.entries.values()]
    ends = [e.window_end for e in state.entries.values()]
    return min([now, *starts]) - _LOCAL_PAST_S, max([now, *ends]) + _LOCAL_AHEAD_S


@dataclass
class Snapshot:
    """A read-only scan: the catalog state and the files left out of it (relative paths, shown safely)."""

    state: CatalogState
    left_out: list[str] = field(default_factory=list)

    def source(self, data_dir: Path, root: str | None = None) -> str | None:
        """The ``read_parquet`` argument of the views: the glob, or the snapshot's files if one was left out;
        None when there is no file to read. ``root``: as in :func:`segment_glob`."""
        if not self.left_out:
            return _literal(segment_glob(data_dir, root)) if _has_segments(data_dir) else None
        root = root if root is not None else str(Path(data_dir).resolve())
        files = sorted(f"{root}/{e.relpath}" for e in self.state.entries.values())
        return "[" + ", ".join(_literal(f) for f in files) + "]" if files else None


def _shown(path: Path) -> str:
    """A path as text that can always be printed (undecodable bytes as ``\\xff``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _read_index(data_dir: Path) -> dict[str, tuple[int, int, CatalogEntry]]:
    """The node's catalog index (relpath -> size, mtime_ns, entry), read only; empty if absent or unreadable."""
    path = Path(data_dir) / CATALOG_DIR / INDEX_NAME
    try:
        raw = json.loads(path.read_bytes())
        return {str(rel): (int(v[0]), int(v[1]), CatalogEntry.from_json(v[2])) for rel, v in raw.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        log.warning("catalog index %s unreadable (%s): reading the segment footers instead", _shown(path), exc)
        return {}


def scan_readonly(data_dir: Path) -> Snapshot:
    """The catalog state of ``data_dir`` without writing anything there (module docstring, "Read only")."""
    data_dir = Path(data_dir)
    root = data_dir / EVENTS_DIR
    cache = _read_index(data_dir)
    entries: dict[str, CatalogEntry] = {}
    left_out: list[str] = []

    def leave_out(path: Path, reason: str) -> None:
        left_out.append(_shown(path.relative_to(data_dir)))
        log.warning("segment %s in %s left out of the views: %s", left_out[-1], _shown(data_dir), reason)

    names = sorted(root.glob("store=*/date=*/camera=*/*.parquet")) if root.is_dir() else []
    for path in names:
        if is_temp_file(path):
            continue
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            leave_out(path, "its name is not valid UTF-8; rename or remove it")
            continue
        rel = str(path.relative_to(data_dir))
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # removed since the listing (compaction, retention)
        except OSError as exc:
            leave_out(path, f"cannot read it: {exc}")
            continue
        cached = cache.get(rel)
        try:
            if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
                entry = cached[2]
            else:
                entry = entry_from_file(path, data_dir, sha256="-", strict=True)
            check_entry(entry)
        except (StorageError, OSError, pa.ArrowException, ValueError) as exc:
            leave_out(path, str(exc))
            continue
        entries[entry.segment_id] = entry
    return Snapshot(CatalogState(entries, compute_superseded(entries)), left_out)


def _snapshot_tables(con: duckdb.DuckDBPyConnection, root: str, state: CatalogState) -> int:
    """Load the catalog snapshot (visible files, lost pieces, claims, credited pieces) into the internal schema.

    ``root``: how SQL names the data dir. Returns the number of lost pieces (0: no claim is outranked anywhere).
    """
    live = set(state.live_ids())
    files = pa.table(
        {
            "filename": pa.array([f"{root}/{e.relpath}" for e in state.entries.values()], pa.string()),
            "live": pa.array([k in live for k in state.entries], pa.bool_()),
        }
    )
    live_entries = state.live()
    credited, lost = credit_pieces(live_entries)

    def pieces(ps: list) -> pa.Table:  # type: ignore[type-arg]
        return pa.table(
            {
                "camera_id": pa.array([p.camera_id for p in ps], pa.string()),
                "node": pa.array([p.node for p in ps], pa.string()),
                "token": pa.array([p.token for p in ps], pa.int64()),
                "p_start": pa.array([_us(p.start) for p in ps], pa.int64()).cast(_TS),
                "p_end": pa.array([_us(p.end) for p in ps], pa.int64()).cast(_TS),
            }
        )

    claims = [(e, r) for e in live_entries for r in e.claims()]
    lost_s: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for p in lost:
        lost_s.setdefault((p.camera_id, p.node, p.token), []).append((p.start, p.end))

    def lost_in(cam: str, node: str, token: int, a: float, b: float) -> float:
        return sum(max(0.0, min(b, y) - max(a, x)) for x, y in lost_s.get((cam, node, token), ()))

    lost_len = [lost_in(e.camera_id, r.node, r.token, r.start, r.end) for e, r in claims]
    claim_tbl = pa.table(
        {
            "camera_id": pa.array([e.camera_id for e, _ in claims], pa.string()),
            "window_start": pa.array([_us(r.start) for _, r in claims], pa.int64()).cast(_TS),
            "window_end": pa.array([_us(r.end) for _, r in claims], pa.int64()).cast(_TS),
            "node": pa.array([r.node for _, r in claims], pa.string()),
            "token": pa.array([r.token for _, r in claims], pa.int64()),
            "frames": pa.array([r.frames for _, r in claims], pa.int64()),
            "credited": pa.array([x < 1e-6 for x in lost_len], pa.bool_()),
            "credited_s": pa.array([r.end - r.start - x for (_, r), x in zip(claims, lost_len, strict=True)]),
            "segment_id": pa.array([e.segment_id for e, _ in claims], pa.string()),
        }
    )
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}")
    for name, tbl in (("files", files), ("lost", pieces(lost)), ("credited", pieces(credited)), ("claims", claim_tbl)):
        con.register("_edgepair_tmp", tbl)
        con.execute(f"CREATE OR REPLACE TABLE {INTERNAL_SCHEMA}.{name} AS SELECT * FROM _edgepair_tmp")
        con.unregister("_edgepair_tmp")
    return len(lost)


SNAPSHOT_GONE = (
    "the store's files changed since these views were built (the node compacted or removed files they read), so"
    " they would miss events: build them again (`edgepair analytics open` for a database file; `edgepair sql` does"
    " it by itself)"
)


def _still_there(source: str | None, root: str, data_dir: Path) -> str:
    """SQL (``AND ...``) that stops a query with :data:`SNAPSHOT_GONE` when a live file of the snapshot is gone.

    The views read the glob and take files compacted since the snapshot for duplicates of their sources (rule 3 of
    :mod:`storage.compaction`); once the sources are deleted, their rows would silently vanish. A connection of a
    command lives seconds; the analyst's database file and a long session do not (``edgepair sql`` builds its views
    again first, :class:`storage.analytics.StoreSession`). With an explicit file list (a file left out) a missing
    file already fails the query."""
    if source is None or source.startswith("["):
        return ""
    pattern = _literal(segment_glob(data_dir, root))
    return (
        f" AND (SELECT CASE WHEN count(*) = 0 THEN true ELSE error({_literal(SNAPSHOT_GONE)}) END"
        f" FROM {INTERNAL_SCHEMA}.files g WHERE g.live AND g.filename NOT IN (SELECT file FROM glob({pattern})))"
    )


def create_views(con: duckdb.DuckDBPyConnection, data_dir: Path, timezone: str, *, root: str | None = None) -> None:
    """(Re)create every view of :data:`VIEW_NAMES` on ``con`` for the segments under ``data_dir``. Cheap; writes
    nothing in ``data_dir`` (:func:`scan_readonly`). ``root``: how the SQL names ``data_dir`` (default: its absolute
    path; a path relative to the database file's folder makes a portable file, see :mod:`storage.analytics`)."""
    load_timezone(timezone)  # ConfigError with a fix if the name is unknown
    tz = _literal(timezone)
    snap = scan_readonly(data_dir)
    state = snap.state
    root = root if root is not None else str(Path(data_dir).resolve())
    source = snap.source(data_dir, root)
    n_lost = _snapshot_tables(con, root, state)
    lo, hi = _local_range(state)

    def local(col: str) -> str:
        return local_ts_sql(col, timezone, lo, hi)

    con.execute(f"CREATE OR REPLACE VIEW segments_raw AS {_segments_raw_sql(source)}")
    schema_cols = ", ".join(f.name for f in EVENT_SCHEMA if f.name not in ("store_id", "camera_id", "ts"))
    # Lost pieces are a snapshot: with none, no row can be outranked, so the per-row join is left out.
    lost_join = (
        f"""LEFT JOIN {INTERNAL_SCHEMA}.lost l
              ON l.camera_id = r.camera_id AND l.node = r.node AND l.token = r.token
             AND r.ts >= l.p_start AND r.ts < l.p_end"""
        if n_lost
        else ""
    )
    con.execute(f"""
        CREATE OR REPLACE VIEW events_audit AS
        SELECT store_id, camera_id, ts, ts_local,
               CAST(ts_local AS DATE) AS local_date, CAST(hour(ts_local) AS INTEGER) AS local_hour, {schema_cols},
               credited, filename
        FROM (
            SELECT r.*, {local("r.ts")} AS ts_local, {"l.camera_id IS NULL" if n_lost else "true"} AS credited
            FROM segments_raw r
            LEFT JOIN {INTERNAL_SCHEMA}.files f ON f.filename = r.filename
            {lost_join}
            WHERE coalesce(f.live, NOT contains(r.filename, '{COMPACT_MARK}')){_still_there(source, root, data_dir)}
        )
    """)
    con.execute(f"""
        CREATE OR REPLACE VIEW events AS
        SELECT store_id, camera_id, ts, ts_local, local_date, local_hour, {schema_cols}
        FROM events_audit WHERE credited
    """)
    con.execute(f"""
        CREATE OR REPLACE VIEW visits AS
        SELECT store_id, camera_id, zone_id, track_id, enter_ts, exit_ts, dwell_s,
               {local("enter_ts")} AS enter_local, {local("exit_ts")} AS exit_local,
               CAST({local("enter_ts")} AS DATE) AS local_date, segment_id
        FROM (
            SELECT *, ts AS exit_ts,
                   ts - to_microseconds(CAST(round(dwell_s * 1000000) AS BIGINT)) AS enter_ts
            FROM events WHERE kind = 'zone_exit'
        )
    """)
    con.execute(
        f"CREATE OR REPLACE VIEW segment_meta AS {_segment_meta_sql(source, tz, _still_there(source, root, data_dir))}"
    )
    _create_summary_views(con, tz)
    log.debug("created views %s over %s (time zone %s)", ", ".join(VIEW_NAMES), data_dir, timezone)


def _create_summary_views(con: duckdb.DuckDBPyConnection, tz: str) -> None:
    """The views summed over ``events``, ``visits`` and the claims: traffic, dwell, windows and coverage (``tz``:
    the store's time zone as an SQL literal)."""
    con.execute("""
        CREATE OR REPLACE VIEW traffic_hourly AS
        SELECT store_id, camera_id, line_id, local_date, local_hour,
               count(*) FILTER (WHERE direction = 'in') AS ins,
               count(*) FILTER (WHERE direction = 'out') AS outs
        FROM events WHERE kind = 'line_cross'
        GROUP BY ALL
    """)
    con.execute("""
        CREATE OR REPLACE VIEW zone_dwell AS
        SELECT store_id, camera_id, zone_id, count(*) AS visits,
               avg(dwell_s) AS mean_dwell_s, median(dwell_s) AS median_dwell_s,
               quantile_cont(dwell_s, 0.9) AS p90_dwell_s
        FROM visits
        GROUP BY ALL
    """)
    con.execute(f"""
        CREATE OR REPLACE VIEW windows AS
        SELECT camera_id, window_start, window_end, node, token, frames, credited, credited_s, segment_id
        FROM {INTERNAL_SCHEMA}.claims
    """)
    credited = f"{INTERNAL_SCHEMA}.credited"
    con.execute(f"""
        CREATE OR REPLACE VIEW coverage AS
        WITH t AS ({slots_sql(f"SELECT {tz} AS timezone, min(p_start) AS lo, max(p_end) AS hi FROM {credited}", ())}),
        c AS ({cov_slots_sql(f"SELECT camera_id, node, p_start, p_end FROM {credited}", ("camera_id", "node"))})
        SELECT c.camera_id, t.local_date, t.local_hour, t.utc_offset_s, t.hour_start,
               sum(c.s) AS seconds_covered, t.hour_s, least(1.0, sum(c.s) / t.hour_s) AS share,
               string_agg(DISTINCT c.node, ',' ORDER BY c.node) AS nodes
        FROM c JOIN t USING (slot)
        GROUP BY c.camera_id, t.local_date, t.local_hour, t.utc_offset_s, t.hour_start, t.hour_s
    """)


def open_dataset(
    data_dir: Path, timezone: str, database: str = ":memory:", *, locked: bool = True
) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection with the views of :data:`VIEW_NAMES` over ``data_dir``.

    Works with no segment yet (the views return zero rows with the right columns). The session time zone is set to
    ``timezone`` so that ``TIMESTAMPTZ`` values print in store time. Extension auto-install is off (offline site).
    ``locked`` (the default): once the views exist the connection may read only the segments under
    ``data_dir/events``, and no setting can change any more (:func:`storage.sandbox.lock_down`); the views can
    still be re-created with :func:`create_views`. Nothing is written in ``data_dir``.
    Raises QueryError if DuckDB fails (for example a corrupt segment), ConfigError for an unknown time zone.
    """
    load_timezone(timezone)
    try:
        con = duckdb.connect(database)
    except duckdb.Error as exc:
        raise QueryError(f"cannot open DuckDB database {database}: {exc}") from exc
    try:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("LOAD icu")  # statically linked in the wheel; fails fast (no download) if a build lacks it
        con.execute(PARQUET_CACHE)
        con.execute(f"SET TimeZone = {_literal(timezone)}")
        create_views(con, data_dir, timezone)
        if locked:
            lock_down(con, data_dir)
    except duckdb.Error as exc:
        con.close()
        raise QueryError(
            f"cannot create the views over {Path(data_dir) / EVENTS_DIR}: {one_line(exc)}; if a segment is corrupt,"
            " move it out of the data folder"
        ) from exc
    return con


def _help() -> str:
    return f"views: {', '.join(VIEW_NAMES)}; run 'SHOW TABLES' to list them, 'DESCRIBE events' for columns"


def run_query(data_dir: Path, timezone: str, sql: str) -> pa.Table:
    """Run ``sql`` (exactly one read-only statement) on a fresh locked connection over ``data_dir``; return the
    result as an Arrow table.

    Anything else (two statements, ``COPY``, ``SET``, ``ATTACH``, ``INSTALL``/``LOAD``, reading a file outside the
    views) is refused before or while it runs (:mod:`storage.sandbox`); every error is a QueryError of one line,
    and DuckDB errors name the views. Nothing is written in ``data_dir``.
    """
    check_statement(sql, _help())
    con = open_dataset(data_dir, timezone)
    try:
        relation = con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise query_error(exc, _help()) from None
    finally:
        con.close()


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "NaN"
    return str(value)


def format_table(table: pa.Table, *, max_rows: int = 100, max_width: int = 40) -> str:
    """A plain text table for a terminal: header, rule, rows (numbers right-aligned), and a row count.

    At most ``max_rows`` rows are shown and cells are cut to ``max_width`` characters.
    """
    names = table.column_names
    shown = table.slice(0, max_rows).to_pylist()
    cells = [[_cell(row[name]) for name in names] for row in shown]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(names)]
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) for t in table.schema.types]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)] if names else []
    out += [line(row) for row in cells]
    count = f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}"
    count += f", first {max_rows} shown)" if table.num_rows > max_rows else ")"
    out.append(count)
    return "\n".join(out)
