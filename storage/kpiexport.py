"""What leaves the store for HQ: hourly and daily KPI tables only, and the HQ database built from them.

:func:`export_kpis` writes, for local dates ``[from, to]``, the store's KPI tables (:data:`EXPORT_TABLES`, read from
the store's views, so from the materialised days where they are fresh) as Parquet, one file per table, plus
``export.json`` (store id, time zone, dates, KPI definitions history, row counts). Every row carries ``store_id``,
``timezone`` and ``kpi_version``; hourly rows ``local_date``, ``local_hour``, ``utc_offset_s`` and ``coverage``.
Nothing per person leaves: no ``visits`` (track ids, exact times), no ``events``, and occupancy goes out per hour
(``occupancy_hourly``: peak and mean of the per-minute count), not per minute. The folder is written under a
temporary name and renamed; exporting again into the same folder replaces it whole.

:func:`merge_exports` copies each store's export to ``out/stores/<store_id>/`` (a store exported again replaces
its part) and :func:`open_hq` builds the HQ database: one native table per KPI table with the rows of every store
(in each store's own local time, with coverage), ``stores`` (store_id, timezone, date_from, date_to),
``kpi_definitions`` (store_id, version, effective_from, definition) and the view ``store_daily`` (per store and
local day: entries over its entrance lines, mean coverage, capture rate). The raw-event merge of
:func:`storage.analytics.merge_stores` stays as an explicit opt-in (``analytics merge --raw``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from cluster.errors import ConfigError, QueryError, StorageError
from storage.analytics import _build_file, connect_store, definitions_in_force, outside_data_dir
from storage.kpimat import BlockTrust
from storage.kpis import StoreSetup
from storage.layout import check_store_id
from storage.segments import write_atomic
from storage.sqltext import literal as _literal

log = logging.getLogger(__name__)

EXPORT_FILE = "export.json"
EXPORT_FORMAT = 1
STORES_DIR = "stores"
EXPORT_TABLES: dict[str, str] = {
    "traffic_hourly": "SELECT * FROM traffic_hourly",
    "traffic_daily": "SELECT * FROM traffic_daily",
    "occupancy_hourly": """
        SELECT store_id, local_date, local_hour, utc_offset_s, CAST(sum(ins) AS BIGINT) AS ins,
               CAST(sum(outs) AS BIGINT) AS outs, max(occupancy) AS peak_occupancy,
               avg(occupancy) AS mean_occupancy, avg(coverage) AS coverage, any_value(kpi_version) AS kpi_version
        FROM occupancy GROUP BY store_id, local_date, local_hour, utc_offset_s
    """,
    "zone_dwell": "SELECT * FROM zone_dwell",
    "bounce_rate": "SELECT * FROM bounce_rate",
    "capture_rate": "SELECT * FROM capture_rate",
    "peak_hours": "SELECT * FROM peak_hours",
    "coverage": "SELECT * FROM coverage",
    "coverage_daily": "SELECT * FROM coverage_daily",
}
"""The tables that leave the store: hourly and daily KPIs, nothing per person or per minute."""


def _replace_dir(tmp: Path, out: Path, marker: str) -> None:
    """Rename ``tmp`` to ``out``; an ``out`` already there must hold ``marker`` (ours) and is replaced whole."""
    old = None
    if out.exists():
        if not (out / marker).is_file() and any(out.iterdir()):
            raise ConfigError(f"{out} exists and is not an earlier export (no {marker}): choose an empty folder")
        old = out.with_name(f".{out.name}.old-{secrets.token_hex(4)}")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_kpis(
    data_dir: Path, setup: StoreSetup, date_from: date, date_to: date, out: Path, *, trust: BlockTrust | None = None
) -> dict[str, int]:
    """Write the store's KPI tables of local dates ``[date_from, date_to]`` to the folder ``out``; return the row
    count of each table. ``data_dir`` is only read; ``out`` must be outside it."""
    if date_to < date_from:
        raise ConfigError(f"--from {date_from} is after --to {date_to}: give the first local date, then the last")
    out = outside_data_dir(out, data_dir, "the export folder")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: give a new or existing folder for the export")
    history = definitions_in_force(Path(data_dir), setup.definition())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    counts: dict[str, int] = {}
    con = connect_store(Path(data_dir), setup, locked=False, trust=trust)
    try:
        tz = _literal(setup.timezone)
        days = f"local_date BETWEEN DATE '{date_from.isoformat()}' AND DATE '{date_to.isoformat()}'"
        for name, select in EXPORT_TABLES.items():
            target = tmp / f"{name}.parquet"
            con.execute(
                f"COPY (SELECT *, {tz} AS timezone FROM ({select}) WHERE {days} ORDER BY ALL)"
                f" TO {_literal(str(target))} (FORMAT parquet, COMPRESSION zstd)"
            )
            row = con.execute(f"SELECT count(*) FROM read_parquet({_literal(str(target))})").fetchone()
            counts[name] = int(row[0]) if row else 0
    except duckdb.Error as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise QueryError(f"cannot export the KPIs of store {setup.store_id}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        con.close()
    meta = {
        "format": EXPORT_FORMAT,
        "store_id": setup.store_id,
        "timezone": setup.timezone,
        "date_from": date_from.isoformat(),
        "date_to": date_to.isoformat(),
        "definitions": [r.to_json() for r in history],
        "rows": counts,
    }
    write_atomic(tmp / EXPORT_FILE, (json.dumps(meta, indent=1) + "\n").encode())
    _replace_dir(tmp, out, EXPORT_FILE)
    log.info("store %s: KPIs of %s..%s exported to %s", setup.store_id, date_from, date_to, out)
    return counts


def read_export(folder: Path) -> dict[str, Any]:
    """The ``export.json`` of an export folder, checked; StorageError with the fix otherwise."""
    path = Path(folder) / EXPORT_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta["format"] != EXPORT_FORMAT:
            raise ValueError(f"format {meta['format']}, expected {EXPORT_FORMAT}")
        missing = [t for t in EXPORT_TABLES if not (Path(folder) / f"{t}.parquet").is_file()]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing")
        check_store_id(meta["store_id"])  # it names the folder the export is merged into
        str(meta["timezone"])
    except FileNotFoundError:
        raise StorageError(
            f"{folder} is not a KPI export (no {EXPORT_FILE}): run `edgepair analytics export` at the store, or pass"
            " --raw to merge raw event data dirs (visitor rows then leave the stores)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, StorageError) as exc:
        raise StorageError(f"{path} is not a valid KPI export ({exc}): export the store again") from exc
    return dict(meta)


def merge_exports(sources: list[Path], out: Path) -> list[str]:
    """Copy each export folder of ``sources`` to ``out/stores/<store_id>/``; return the store ids merged."""
    out = Path(out).resolve()
    metas = [(Path(src), read_export(Path(src))) for src in sources]
    ids = [m["store_id"] for _, m in metas]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise StorageError(f"store {', '.join(dupes)} is in two of the exports given: merge each store once")
    for src, meta in metas:
        target = out / STORES_DIR / meta["store_id"]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        shutil.copytree(src, tmp)
        _replace_dir(tmp, target, EXPORT_FILE)
    log.info("merged the KPI exports of %d stores into %s", len(ids), out)
    return ids


_STORE_DAILY = """
    CREATE OR REPLACE VIEW store_daily AS
    WITH t AS (
        SELECT store_id, local_date, CAST(sum(entries) AS BIGINT) AS entries, avg(coverage) AS coverage,
               any_value(kpi_version) AS kpi_version
        FROM traffic_daily GROUP BY store_id, local_date
    )
    SELECT t.store_id, s.timezone, t.local_date, t.entries, t.coverage, c.capture_rate, t.kpi_version
    FROM t JOIN stores s USING (store_id) LEFT JOIN capture_rate c USING (store_id, local_date)
"""


def build_hq(con: duckdb.DuckDBPyConnection, hq_dir: Path) -> int:
    """Create the HQ tables and views of :func:`open_hq` on ``con``; return the number of stores."""
    root = Path(hq_dir).resolve() / STORES_DIR
    folders = sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise StorageError(f"{root.parent} holds no store export ({STORES_DIR}/ is empty): run analytics merge first")
    metas = [read_export(f) for f in folders]
    for name in EXPORT_TABLES:
        files = ", ".join(_literal(str(f / f"{name}.parquet")) for f in folders)
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM read_parquet([{files}], union_by_name = true)")
    con.execute("CREATE OR REPLACE TABLE stores (store_id VARCHAR, timezone VARCHAR, date_from DATE, date_to DATE)")
    con.executemany(
        "INSERT INTO stores VALUES (?, ?, ?, ?)",
        [[m["store_id"], m["timezone"], m["date_from"], m["date_to"]] for m in metas],
    )
    con.execute(
        "CREATE OR REPLACE TABLE kpi_definitions (store_id VARCHAR, version VARCHAR, effective_from TIMESTAMPTZ,"
        " definition VARCHAR)"
    )
    rows = [
        [m["store_id"], d["version"], d["effective_from"], json.dumps(d["definition"], sort_keys=True)]
        for m in metas
        for d in m["definitions"]
    ]
    if rows:
        con.executemany("INSERT INTO kpi_definitions VALUES (?, ?, CAST(? AS TIMESTAMPTZ), ?)", rows)
    con.execute(_STORE_DAILY)
    return len(folders)


def open_hq(hq_dir: Path, out_db: Path) -> Path:
    """Write the HQ database ``out_db`` (DuckDB 1.x format) from the exports merged into ``hq_dir``; return it."""
    path = _build_file(out_db, lambda con: build_hq(con, hq_dir))
    log.info("HQ database %s over the exports in %s", path, Path(hq_dir).resolve())
    return path
