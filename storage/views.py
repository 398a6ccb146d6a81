"""DuckDB views over the event segments, for analysts. Read only; never sees writers' temporary files.

Views (times in UTC are ``TIMESTAMPTZ``; ``*_local`` are plain ``TIMESTAMP`` in the store's time zone):

- ``segments_raw``: every column of every segment file, plus the hive partitions ``store``, ``date`` (local date of
  the window start), ``camera`` and ``filename``.
- ``events``: one row per event, the segment columns plus ``ts_local``, ``local_date``, ``local_hour``.
- ``visits``: one row per zone visit (from ``zone_exit`` events; enter = exit - dwell).
- ``traffic_hourly``: line crossings in and out per camera, line, local date and local hour.
- ``zone_dwell``: visits and mean/median/p90 dwell per camera and zone.
- ``segment_meta``: one row per segment from the Parquet metadata, zero-event segments included: what was covered.

The file glob is expanded again by every query, so segments written after the views were created are seen; only
views created while there was no segment at all stay empty until :func:`create_views` runs again (it is cheap, or
open a fresh connection). DuckDB's ICU extension (``AT TIME ZONE``) is statically linked in
the duckdb wheel, so nothing is downloaded; extension auto-install is switched off so that nothing ever tries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pyarrow as pa

from cluster.errors import QueryError
from storage.schema import EVENT_SCHEMA, SegmentMeta
from storage.segments import EVENTS_DIR, load_timezone

log = logging.getLogger(__name__)

VIEW_NAMES = ("segments_raw", "events", "visits", "traffic_hourly", "zone_dwell", "segment_meta")

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


def _literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def segment_glob(data_dir: Path) -> str:
    """The glob of every named segment; ``*.parquet`` never matches a temporary ``.<name>.tmp`` file."""
    return str(Path(data_dir).resolve() / EVENTS_DIR / "store=*" / "date=*" / "camera=*" / "*.parquet")


def _has_segments(data_dir: Path) -> bool:
    root = Path(data_dir) / EVENTS_DIR
    return root.is_dir() and next(root.glob("store=*/date=*/camera=*/*.parquet"), None) is not None


def _segments_raw_sql(data_dir: Path) -> str:
    if _has_segments(data_dir):
        return (
            f"SELECT * FROM read_parquet({_literal(segment_glob(data_dir))}, hive_partitioning = true,"
            f" hive_types = {_HIVE_TYPES}, filename = true)"
        )
    # No file yet: the same columns, zero rows (read_parquet raises on a glob that matches nothing).
    cols = [f"CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS {f.name}" for f in EVENT_SCHEMA]
    cols += ["CAST(NULL AS VARCHAR) AS filename", "CAST(NULL AS VARCHAR) AS camera"]
    cols += ["CAST(NULL AS DATE) AS date", "CAST(NULL AS VARCHAR) AS store"]
    return f"SELECT {', '.join(cols)} WHERE false"


def _segment_meta_sql(data_dir: Path, tz: str) -> str:
    names = list(SegmentMeta.__dataclass_fields__)
    if _has_segments(data_dir):
        picks = ", ".join(
            f"max(decode(value)) FILTER (WHERE decode(key) = 'edgepair.{name}') AS {name}" for name in names
        )
        source = (
            f"SELECT file_name AS filename, {picks} FROM parquet_kv_metadata({_literal(segment_glob(data_dir))})"
            " GROUP BY file_name"
        )
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
    """


def create_views(con: duckdb.DuckDBPyConnection, data_dir: Path, timezone: str) -> None:
    """(Re)create every view of :data:`VIEW_NAMES` on ``con`` for the segments under ``data_dir``. Cheap."""
    load_timezone(timezone)  # ConfigError with a fix if the name is unknown
    tz = _literal(timezone)
    con.execute(f"CREATE OR REPLACE VIEW segments_raw AS {_segments_raw_sql(data_dir)}")
    schema_cols = ", ".join(f.name for f in EVENT_SCHEMA if f.name not in ("store_id", "camera_id", "ts"))
    con.execute(f"""
        CREATE OR REPLACE VIEW events AS
        SELECT store_id, camera_id, ts, ts_local,
               CAST(ts_local AS DATE) AS local_date, CAST(hour(ts_local) AS INTEGER) AS local_hour, {schema_cols}
        FROM (SELECT *, ts AT TIME ZONE {tz} AS ts_local FROM segments_raw)
    """)
    con.execute(f"""
        CREATE OR REPLACE VIEW visits AS
        SELECT store_id, camera_id, zone_id, track_id, enter_ts, exit_ts, dwell_s,
               enter_ts AT TIME ZONE {tz} AS enter_local, exit_ts AT TIME ZONE {tz} AS exit_local,
               CAST(enter_ts AT TIME ZONE {tz} AS DATE) AS local_date, segment_id
        FROM (
            SELECT *, ts AS exit_ts,
                   ts - to_microseconds(CAST(round(dwell_s * 1000000) AS BIGINT)) AS enter_ts
            FROM events WHERE kind = 'zone_exit'
        )
    """)
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
    con.execute(f"CREATE OR REPLACE VIEW segment_meta AS {_segment_meta_sql(data_dir, tz)}")
    log.debug("created views %s over %s (time zone %s)", ", ".join(VIEW_NAMES), data_dir, timezone)


def open_dataset(data_dir: Path, timezone: str, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection with the views of :data:`VIEW_NAMES` over ``data_dir``.

    Works with no segment yet (the views return zero rows with the right columns). The session time zone is set to
    ``timezone`` so that ``TIMESTAMPTZ`` values print in store time. Extension auto-install is off (offline site).
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
        con.execute(f"SET TimeZone = {_literal(timezone)}")
        create_views(con, data_dir, timezone)
    except duckdb.Error as exc:
        con.close()
        raise QueryError(
            f"cannot create the views over {Path(data_dir) / EVENTS_DIR}: {exc}; if a segment is corrupt,"
            " move it out of the data folder"
        ) from exc
    return con


def run_query(data_dir: Path, timezone: str, sql: str) -> pa.Table:
    """Run ``sql`` on a fresh connection over ``data_dir`` and return the result as an Arrow table.

    DuckDB errors are raised as QueryError with DuckDB's message and the list of views. A statement without a
    result (``SET``, ``CREATE``) gives DuckDB's status table.
    """
    con = open_dataset(data_dir, timezone)
    try:
        relation = con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise QueryError(
            f"query failed: {str(exc).strip()} (views: {', '.join(VIEW_NAMES)}; run 'SHOW TABLES' to list them,"
            " 'DESCRIBE events' for columns)"
        ) from exc
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
