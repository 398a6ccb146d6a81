"""HQ at scale: 1,000 simulated stores x 1 year of KPI exports, merged into the HQ database, then daily traffic per
store over the year (median of 3), with the merge's throughput.

Each simulated store's export has the exact tables and columns of a real one (the schemas are taken from a real
`export_kpis` of a tiny generated store): 2 entrance cameras, one zone, 365 local days, hourly and daily rows with
random, typed values (vectorised numpy). Stores alternate between four time zones.

    PYTHONPATH=. python bench/hq.py [--stores 1000] [--work /tmp/edgepair-hq]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.events import Event
from storage.analytics import ensure_store_file, record_definition
from storage.kpiexport import EXPORT_FILE, EXPORT_FORMAT, EXPORT_TABLES, export_kpis, merge_exports, open_hq
from storage.kpis import LineSpec, StoreSetup, ZoneSpec
from storage.segments import SegmentWriter

ZONES = (("Europe/London", 0), ("Europe/Paris", 3600), ("America/New_York", -18000), ("Asia/Tokyo", 32400))
DAYS = [date(2025, 1, 1) + timedelta(days=i) for i in range(365)]
CAMS = ("cam00", "cam01")


def real_schemas(tmp: Path) -> dict[str, pa.Schema]:
    """The schema of each exported table, from a real export of a one-hour store."""
    data = tmp / "tiny"
    setup = StoreSetup("tiny", "Europe/London", (LineSpec("cam00", "door", "entrance"),), (ZoneSpec("cam00", "z", 0),))
    t0 = datetime(2025, 7, 1, 9, tzinfo=UTC).timestamp()
    events = [Event(t0 + 60, "cam00", 1, "line_cross", line_id="door", direction="in"),
              Event(t0 + 90, "cam00", 1, "zone_exit", zone_id="z", dwell_s=20.0)]  # fmt: skip
    SegmentWriter(data, "tiny", "Europe/London", "ws").write(
        "cam00", t0, t0 + 3600, events, frames=1, token=1, config_version="c", model_version="m"
    )
    ensure_store_file(data, setup)
    record_definition(data, setup.definition(), effective_from=datetime(2025, 1, 1, tzinfo=UTC))
    export_kpis(data, setup, date(2025, 7, 1), date(2025, 7, 1), tmp / "tiny-export")
    return {name: pq.read_schema(tmp / "tiny-export" / f"{name}.parquet") for name in EXPORT_TABLES}


def column(name: str, typ: pa.DataType, grid: dict[str, np.ndarray], rng: np.random.Generator, n: int) -> pa.Array:
    if name in grid:
        return pa.array(grid[name]).cast(typ)
    if pa.types.is_integer(typ):
        return pa.array(rng.integers(0, 60, n)).cast(typ)
    if pa.types.is_floating(typ):
        return pa.array(rng.random(n)).cast(typ)
    return pa.array(np.full(n, "x")).cast(typ)


def store_export(folder: Path, i: int, schemas: dict[str, pa.Schema], rng: np.random.Generator) -> int:
    """Write store ``i``'s simulated export; return its rows."""
    tz, offset = ZONES[i % len(ZONES)]
    sid = f"store{i:04d}"
    folder.mkdir(parents=True)
    rows = 0
    day_ns = np.array(DAYS, dtype="datetime64[D]")
    for name, schema in schemas.items():
        hourly = "local_hour" in schema.names
        per_cam = "camera_id" in schema.names
        d = np.repeat(day_ns, 24) if hourly else day_ns
        h = np.tile(np.arange(24), len(DAYS)) if hourly else np.zeros(len(DAYS), dtype=int)
        cams = np.array(CAMS if per_cam else ("",))
        d, h = np.tile(d, len(cams)), np.tile(h, len(cams))
        cam = np.repeat(cams, len(d) // len(cams))
        n = len(d)
        start = (d.astype("datetime64[s]").astype(np.int64) + h * 3600 - offset) * 1_000_000
        grid = {
            "store_id": np.full(n, sid), "timezone": np.full(n, tz), "camera_id": cam, "line_id": np.full(n, "door"),
            "zone_id": np.full(n, "shelf"), "local_date": d, "local_hour": h, "utc_offset_s": np.full(n, offset),
            "hour_start": start.astype("datetime64[us]"), "kpi_version": np.full(n, "v1"),
        }  # fmt: skip
        cols = [column(f.name, f.type, grid, rng, n) for f in schema]
        pq.write_table(pa.Table.from_arrays(cols, schema=schema), folder / f"{name}.parquet", compression="zstd")
        rows += n
    meta = {"format": EXPORT_FORMAT, "store_id": sid, "timezone": tz, "date_from": "2025-01-01",
            "date_to": "2025-12-31", "definitions": [], "rows": {}}  # fmt: skip
    (folder / EXPORT_FILE).write_text(json.dumps(meta))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgepair-hq"))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(args.work, ignore_errors=True)
    exports = args.work / "exports"
    with tempfile.TemporaryDirectory() as tmp:
        schemas = real_schemas(Path(tmp))
    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    rows = sum(store_export(exports / f"s{i:04d}", i, schemas, rng) for i in range(args.stores))
    print(f"simulated exports: {args.stores} stores x 365 days, {rows:,} rows in {time.perf_counter() - t0:.1f} s")
    hq = args.work / "hq"
    t0 = time.perf_counter()
    merge_exports(sorted(exports.iterdir()), hq)
    copied = time.perf_counter() - t0
    t0 = time.perf_counter()
    db = open_hq(hq, hq / "hq.duckdb")
    built = time.perf_counter() - t0
    print(f"merge: copy {copied:.1f} s + HQ database {built:.1f} s = {args.stores / (copied + built):.1f} stores/s,"
          f" {rows / (copied + built):,.0f} rows/s ({db.stat().st_size / 1e6:.0f} MB)")  # fmt: skip
    sql = {
        "daily traffic per store, one year": "SELECT store_id, local_date, sum(entries) AS entries, avg(coverage)"
        " AS coverage FROM traffic_daily GROUP BY ALL",
        "store_daily view": "SELECT * FROM store_daily",
    }
    with duckdb.connect(str(db), read_only=True) as con:
        for name, q in sql.items():
            times, n = [], 0
            for _ in range(args.runs):
                t = time.perf_counter()
                n = len(con.execute(q).fetchall())
                times.append(time.perf_counter() - t)
            runs = ", ".join(f"{x:.2f}" for x in times)
            print(f"{name}: {n:,} rows, median {statistics.median(times):.2f} s ({runs})")


if __name__ == "__main__":
    main()
