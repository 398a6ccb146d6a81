"""Time every documented analytics view over one simulated year of 16 cameras, recomputed from the events and read
from the materialised KPI days side by side (median of 3 runs each): ``count(*)`` of every documented view and a
typical filtered query of each (one week, one camera and line or zone).

The data is generated deterministically and fast (vectorised): one Parquet file per camera and month, written
directly with pyarrow in the segment schema (as a compacted file whose runs cover the month), ~200 events per hour
per camera. The materialised days are then built as the node's housekeeping does (:func:`storage.kpibuild.
refresh_kpis`, timed), and the export of the year for HQ is timed too.

    PYTHONPATH=. python bench/views.py [--data /tmp/edgepair-bench] [--cameras 16] [--rate 200]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.analytics import _connect, build_store_views, ensure_store_file, record_definition
from storage.catalog import Run, runs_to_kv
from storage.kpibuild import refresh_kpis
from storage.kpiexport import export_kpis
from storage.kpis import KPI_VIEW_NAMES, LineSpec, StoreSetup, ZoneSpec
from storage.schema import EVENT_SCHEMA, SegmentMeta, with_segment_meta
from storage.segments import EVENTS_DIR

log = logging.getLogger("bench.views")
STORE, TZ, YEAR = "bench", "Europe/London", 2025
VIEWS = ("events", *KPI_VIEW_NAMES)


def month_table(cam: str, start: float, end: float, rate: int, rng: np.random.Generator, seg_id: str) -> pa.Table:
    """Events of one camera-month: 60% entrance crossings, 20% pass-by crossings, 20% zone exits."""
    n = int((end - start) / 3600 * rate)
    ts = np.sort(rng.uniform(start, end, n))
    kind_pick = rng.random(n)
    is_line = kind_pick < 0.8
    line = np.where(kind_pick < 0.6, "door", "street")
    direction = np.where(rng.random(n) < 0.5, "in", "out")
    dwell = rng.gamma(2.0, 30.0, n)

    def col(values: np.ndarray, mask: np.ndarray) -> pa.Array:
        return pa.array(values, pa.string(), mask=~mask).dictionary_encode().cast(pa.string())

    cols = {
        "store_id": pa.array([STORE] * n, pa.string()),
        "camera_id": pa.array([cam] * n, pa.string()),
        "ts": pa.array((ts * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "track_id": pa.array(np.arange(n, dtype=np.int64)),
        "kind": pa.array(np.where(is_line, "line_cross", "zone_exit"), pa.string()),
        "line_id": col(line, is_line),
        "zone_id": col(np.full(n, "shelf"), ~is_line),
        "direction": col(direction, is_line),
        "dwell_s": pa.array(dwell, pa.float64(), mask=is_line),
        "node": pa.array(["ws-a"] * n, pa.string()),
        "token": pa.array(np.ones(n, dtype=np.int64)),
        "config_version": pa.array(["bench"] * n, pa.string()),
        "model_version": pa.array(["bench"] * n, pa.string()),
        "segment_id": pa.array([seg_id] * n, pa.string()),
        "seq": pa.array(np.arange(n, dtype=np.int32)),
    }
    return pa.Table.from_arrays([cols[f.name] for f in EVENT_SCHEMA], schema=EVENT_SCHEMA)


def generate(data: Path, cameras: int, rate: int) -> int:
    """Write the simulated year under ``data`` (skipped if already there); return the number of events."""
    marker = data / f".bench-{cameras}-{rate}"
    if marker.exists():
        return int(marker.read_text())
    rng = np.random.default_rng(42)
    total = 0
    for c in range(cameras):
        cam = f"cam{c:02d}"
        for m in range(1, 13):
            start = datetime(YEAR, m, 1, tzinfo=UTC).timestamp()
            end = datetime(YEAR + (m == 12), m % 12 + 1, 1, tzinfo=UTC).timestamp()
            seg_id = f"{cam}.{round(start * 1000)}.day~{hashlib.sha256(f'{cam}{m}'.encode()).hexdigest()[:12]}"
            table = month_table(cam, start, end, rate, rng, seg_id)
            meta = SegmentMeta(seg_id, STORE, cam, start, end, 1, "ws-a", 1, table.num_rows, "bench", "bench", TZ)
            table = with_segment_meta(table, meta)
            kv = {**(table.schema.metadata or {}), **runs_to_kv([Run(start, end, "ws-a", 1, 1)], [])}
            path = (
                data / EVENTS_DIR / f"store={STORE}" / f"date={YEAR}-{m:02d}-01" / f"camera={cam}" / f"{seg_id}.parquet"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.replace_schema_metadata(kv), path, compression="zstd", row_group_size=1 << 20)
            total += table.num_rows
    marker.write_text(str(total))
    return total


WEEK = "local_date BETWEEN DATE '2025-06-02' AND DATE '2025-06-08'"
WEEK_FILTERS = {
    "events": f"{WEEK} AND camera_id = 'cam00' AND line_id = 'door'",
    "events_audit": f"{WEEK} AND camera_id = 'cam00' AND line_id = 'door'",
    "windows": "camera_id = 'cam00' AND window_end > TIMESTAMPTZ '2025-06-02 00:00:00+01'"
    " AND window_start < TIMESTAMPTZ '2025-06-09 00:00:00+01'",
    "coverage": f"{WEEK} AND camera_id = 'cam00'",
    "coverage_daily": f"{WEEK} AND camera_id = 'cam00'",
    "visits": f"{WEEK} AND camera_id = 'cam00' AND zone_id = 'shelf'",
    "traffic_hourly": f"{WEEK} AND camera_id = 'cam00' AND line_id = 'door'",
    "traffic_daily": f"{WEEK} AND camera_id = 'cam00' AND line_id = 'door'",
    "occupancy": WEEK,
    "zone_dwell": f"{WEEK} AND camera_id = 'cam00' AND zone_id = 'shelf'",
    "capture_rate": WEEK,
    "bounce_rate": f"{WEEK} AND camera_id = 'cam00' AND zone_id = 'shelf'",
    "peak_hours": WEEK,
}
"""A typical analyst's question of each documented view: one week of June (BST), one camera and line or zone."""
VIEWS = tuple(WEEK_FILTERS)
QUERIES = {
    **{view: f"SELECT count(*) FROM {view}" for view in VIEWS},
    **{f"{view} (week)": f"SELECT * FROM {view} WHERE {cond} ORDER BY ALL" for view, cond in WEEK_FILTERS.items()},
}


def same(a: object, b: object) -> bool:
    """Equal rows, floats up to their last bits: ``avg`` and ``quantile_cont`` of doubles depend on the order in which
    DuckDB's threads add them (a mean dwell of 60.672765775292866 against 60.67276577529283 in one run)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def timed(con: duckdb.DuckDBPyConnection, sql: str, runs: int) -> tuple[float, float, list[float], object]:
    """Median wall and CPU seconds of ``runs`` runs (CPU: every thread of the process, so a loaded machine's wait for
    a core is left out), the wall times, and the result."""
    times, cpus, result = [], [], None
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        result = con.execute(sql).fetchall()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(times), statistics.median(cpus), times, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/edgepair-bench"))
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--rate", type=int, default=200, help="events per hour per camera")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--raw-runs", type=int, default=None, help="runs of the recomputed side (default: --runs; 0: none)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    n = generate(args.data, args.cameras, args.rate)
    print(f"data: {n:,} events, {args.cameras} cameras, {YEAR} ({time.perf_counter() - t0:.1f} s to generate/check)")
    cams = [f"cam{c:02d}" for c in range(args.cameras)]
    setup = StoreSetup(
        STORE,
        TZ,
        tuple(LineSpec(c, ln, k) for c in cams for ln, k in (("door", "entrance"), ("street", "pass_by"))),
        tuple(ZoneSpec(c, "shelf", 5.0) for c in cams),
        opening_hours=("08:00", "22:00"),
    )
    ensure_store_file(args.data, setup)  # as the node does when it runs this config
    record_definition(args.data, setup.definition(), effective_from=datetime(YEAR - 1, 1, 1, tzinfo=UTC))
    t0 = time.perf_counter()
    rep = refresh_kpis(args.data, now=datetime(YEAR + 1, 2, 1, tzinfo=UTC).timestamp(), max_months=13)
    print(f"materialise (the node's refresh): {rep.days_computed} days computed, {rep.days_copied} copied,"
          f" {len(rep.written)} blocks in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    cons = {}
    raw_count = args.runs if args.raw_runs is None else args.raw_runs
    for mat in (False, True) if raw_count else (True,):
        t0, c0 = time.perf_counter(), time.process_time()
        cons[mat] = _connect(":memory:")
        fresh = build_store_views(cons[mat], args.data, setup, materialised=mat)
        print(f"open {'materialised' if mat else 'recomputed'} (catalog scan + views): {time.perf_counter() - t0:.2f} s"
              f" ({time.process_time() - c0:.2f} s CPU; {fresh} materialised days)")  # fmt: skip
    head = f"{'query':<24}{'rows':>12}{'recomputed s':>14}{'materialised s':>16}{'speed-up':>10}{'mat. CPU s':>12}"
    print(f"{head}   (runs)")
    for name, sql in QUERIES.items():
        mat_s, mat_cpu, mat_runs, mat_res = timed(cons[True], sql, args.runs)
        raw_s, raw_runs = float("nan"), []
        if raw_count:
            raw_s, _, raw_runs, raw_res = timed(cons[False], sql, raw_count)
            assert same(raw_res, mat_res), f"{name}: materialised {mat_res!r:.200} != recomputed {raw_res!r:.200}"
        rows = mat_res[0][0] if name in VIEWS else len(mat_res)  # type: ignore[index,arg-type]
        runs = ", ".join(f"{x:.2f}" for x in raw_runs) + " | " + ", ".join(f"{x:.2f}" for x in mat_runs)
        print(f"{name:<24}{rows:>12,}{raw_s:>14.2f}{mat_s:>16.2f}{raw_s / mat_s:>9.1f}x{mat_cpu:>12.2f}   ({runs})",
              flush=True)  # fmt: skip
    for con in cons.values():
        con.close()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        counts = export_kpis(args.data, setup, date(YEAR, 1, 1), date(YEAR, 12, 31), Path(tmp) / "export")
        took = time.perf_counter() - t0
        rows = sum(counts.values())
        size = sum(f.stat().st_size for f in (Path(tmp) / "export").iterdir())
        print(
            f"export of the year for HQ: {rows:,} rows, {size / 1e6:.1f} MB in {took:.1f} s ({rows / took:,.0f} rows/s)"
        )


if __name__ == "__main__":
    main()
