"""HQ gets aggregates only: the export holds hourly and daily KPI tables (no track id, no time finer than an hour) with
store, time zone and definition versions, and the HQ database merged from two stores' exports gives exact figures in
each store's own local time."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from cluster.errors import StorageError
from storage.analytics import ensure_store_file, record_definition
from storage.kpiexport import EXPORT_FILE, EXPORT_TABLES, export_kpis, merge_exports, open_hq
from storage.kpis import LineSpec, StoreSetup
from storage.segments import SegmentWriter
from tests.unit.test_kpis import V1, V2, V, cross, utc
from tests.unit.test_kpis import dataset as dataset

NY = StoreSetup("s2", "America/New_York", (LineSpec("cam1", "door", "entrance"),), ())


def new_york(root: Path) -> Path:
    data = root / "s2"
    w = SegmentWriter(data, "s2", "America/New_York", "ws-1")
    # 03:00-05:00 UTC on July 1st is 23:00-01:00 on June 30th / July 1st in New York.
    w.write("cam1", utc(2026, 7, 1, 3), utc(2026, 7, 1, 5), [cross(utc(2026, 7, 1, 3, 30), 1, "door", "in"),
            cross(utc(2026, 7, 1, 4, 10), 2, "door", "in"), cross(utc(2026, 7, 1, 4, 20), 2, "door", "out")],
            frames=1, token=1, **V)  # fmt: skip
    ensure_store_file(data, NY)
    record_definition(data, NY.definition(), effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    return data


def test_export_holds_no_track_id_nor_sub_hour_time(dataset: Path, tmp_path: Path) -> None:
    ensure_store_file(dataset, V2)
    counts = export_kpis(dataset, V2, date(2026, 3, 1), date(2026, 7, 31), tmp_path / "exp")
    assert counts["traffic_daily"] == 2 and counts["zone_dwell"] == 3  # 03-29 and 07-01; October left out
    meta = json.loads((tmp_path / "exp" / EXPORT_FILE).read_text())
    assert (meta["store_id"], meta["timezone"]) == ("s1", "Europe/London")
    assert [d["version"] for d in meta["definitions"]] == [V1.definition().version(), V2.definition().version()]
    for name in EXPORT_TABLES:
        table = pq.read_table(tmp_path / "exp" / f"{name}.parquet")
        cols = set(table.column_names)
        assert {"store_id", "timezone", "local_date"} <= cols and ("kpi_version" in cols) != name.startswith("cov"), (
            name
        )
        assert not cols & {"track_id", "ts", "enter_ts", "exit_ts", "minute_start", "local_time", "segment_id"}, name
        assert set(table.column("timezone").to_pylist()) <= {"Europe/London"}
        for col, typ in zip(table.column_names, table.schema.types, strict=True):
            if str(typ).startswith("timestamp"):
                assert col == "hour_start", (name, col)
                assert all(t.timestamp() % 3600 == 0 for t in table.column(col).to_pylist()), name
    assert sorted(pq.read_table(tmp_path / "exp" / "occupancy_hourly.parquet").column_names) == sorted(
        ["store_id", "local_date", "local_hour", "utc_offset_s", "ins", "outs", "peak_occupancy", "mean_occupancy",
         "coverage", "kpi_version", "timezone"]
    )  # fmt: skip


def test_hq_merge_of_two_stores_exports_gives_exact_figures(dataset: Path, tmp_path: Path) -> None:
    ensure_store_file(dataset, V2)
    ny = new_york(tmp_path)
    export_kpis(dataset, V2, date(2026, 1, 1), date(2026, 12, 31), tmp_path / "exports" / "s1")
    export_kpis(ny, NY, date(2026, 1, 1), date(2026, 12, 31), tmp_path / "exports" / "s2")
    hq = tmp_path / "hq"
    assert merge_exports([tmp_path / "exports" / "s1", tmp_path / "exports" / "s2"], hq) == ["s1", "s2"]
    db = open_hq(hq, hq / "hq.duckdb")
    with duckdb.connect(str(db), read_only=True) as c:
        assert c.execute("SELECT store_id, local_date, entries, coverage FROM store_daily ORDER BY ALL").fetchall() == [
            ("s1", date(2026, 3, 29), 3, 1.0), ("s1", date(2026, 7, 1), 5, 1.0), ("s1", date(2026, 10, 25), 2, 1.0),
            ("s2", date(2026, 6, 30), 1, 1 / 24), ("s2", date(2026, 7, 1), 1, 1 / 24),
        ]  # fmt: skip
        assert c.execute(
            "SELECT local_hour, utc_offset_s, entries, exits, coverage FROM traffic_hourly WHERE store_id = 's2'"
            " ORDER BY hour_start"
        ).fetchall() == [(23, -14400, 1, 0, 1.0), (0, -14400, 1, 1, 1.0)]
        assert c.execute("SELECT store_id, timezone FROM stores ORDER BY 1").fetchall() == [
            ("s1", "Europe/London"), ("s2", "America/New_York")
        ]  # fmt: skip
        assert c.execute("SELECT count(*) FROM kpi_definitions").fetchone() == (3,)
        tables = {r[0] for r in c.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "visits" not in tables and "events" not in tables
    with pytest.raises(StorageError, match="not a KPI export"):
        merge_exports([dataset], hq)  # a data dir: only with --raw
