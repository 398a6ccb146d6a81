"""Replication and query bench: push lag at steady load, catch-up after a partition, hourly traffic over a year.

``PYTHONPATH=. python bench/replication.py [--cameras 16] [--lag-seconds 20] [--partition-windows 3600] [--days 365]``
Targets: lag p99 <= 1 s on loopback; the hourly-traffic query over a compacted year <= 1 s.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from storage.catalog import Run, runs_to_kv
from storage.replication import Replicator
from storage.replnode import DEFAULT_BASE, TZ, window_events
from storage.schema import EVENT_SCHEMA, SegmentMeta, events_to_table, with_segment_meta
from storage.segments import SegmentWriter, write_atomic
from storage.views import run_query


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pair(root: Path) -> tuple[Replicator, Replicator]:
    pa_, pb = free_port(), free_port()
    a = Replicator(root / "a", "s1", "ws-a", f"grpc://127.0.0.1:{pb}", port=pa_, anti_entropy_s=2.0)
    b = Replicator(root / "b", "s1", "ws-b", f"grpc://127.0.0.1:{pa_}", port=pb, anti_entropy_s=2.0)
    return a, b


def bench_lag(root: Path, cameras: int, seconds: int) -> tuple[float, float]:
    a, b = pair(root)
    a.start()
    b.start()
    try:
        w = SegmentWriter(root / "a", "s1", TZ, "ws-a")
        t0 = time.time()
        for i in range(seconds):
            for c in range(cameras):
                cam = f"cam-{c}"
                info = w.write(cam, DEFAULT_BASE + i, DEFAULT_BASE + i + 1, window_events(cam, DEFAULT_BASE, i, 5, 1),
                               frames=10, token=1, config_version="c", model_version="m")  # fmt: skip
                a.notify(info.segment_id, info.path, info.sha256)
            time.sleep(max(0.0, t0 + i + 1 - time.time()))
        for _ in range(100):
            if a.peer.pushed >= cameras * seconds:
                break
            time.sleep(0.1)
        lags = sorted(a.peer.push_lags)
    finally:
        a.stop()
        b.stop()
    return statistics.median(lags), lags[min(len(lags) - 1, int(0.99 * len(lags)))]


def bench_catch_up(root: Path, cameras: int, windows: int) -> tuple[float, int]:
    w = SegmentWriter(root / "a", "s1", TZ, "ws-a")
    for i in range(windows):
        for c in range(cameras):
            cam = f"cam-{c}"
            w.write(cam, DEFAULT_BASE + i, DEFAULT_BASE + i + 1, window_events(cam, DEFAULT_BASE, i, 2, 1),
                    frames=10, token=1, config_version="c", model_version="m")  # fmt: skip
    a, b = pair(root)
    a.start()
    t0 = time.monotonic()
    b.start()
    try:
        for _ in range(100_000):
            if len(b.live_catalog()) >= cameras * windows or time.monotonic() - t0 > 1800:
                break
            time.sleep(0.1)
        return time.monotonic() - t0, len(b.live_catalog())
    finally:
        a.stop()
        b.stop()


def make_year(root: Path, cameras: int, days: int, per_day: int) -> None:
    """Day-level compacted files written directly: ``per_day`` line crossings per camera and day."""
    for c in range(cameras):
        cam = f"cam-{c}"
        for d in range(days):
            start = DEFAULT_BASE - 10 * 3600 + d * 86400 - 3600  # local midnight (BST)
            n = per_day
            ts = [start + 8 * 3600 + (k * 12 * 3600) / n for k in range(n)]
            sid = f"{cam}.{round(start * 1000)}.day~bench{d:04d}"
            table = events_to_table([], store_id="s1", node="ws-a", token=1, config_version="c",
                                    model_version="m", segment_id=sid)  # fmt: skip
            cols = {
                "store_id": ["s1"] * n, "camera_id": [cam] * n,
                "ts": pa.array([round(t * 1e6) for t in ts], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "track_id": list(range(n)), "kind": ["line_cross"] * n, "line_id": ["L1"] * n, "zone_id": [None] * n,
                "direction": ["in" if k % 2 else "out" for k in range(n)], "dwell_s": [None] * n,
                "node": ["ws-a"] * n, "token": [1] * n, "config_version": ["c"] * n, "model_version": ["m"] * n,
                "segment_id": [sid] * n, "seq": pa.array(range(n), pa.int32()),
            }  # fmt: skip
            table = pa.table(cols, schema=EVENT_SCHEMA)
            meta = SegmentMeta(sid, "s1", cam, start, start + 86400, 86400 * 10, "ws-a", 1, n, "c", "m", TZ)
            table = with_segment_meta(table, meta)
            table = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), **runs_to_kv([Run(start, start + 86400, "ws-a", 1, 864000)], [])}
            )
            date = time.strftime("%Y-%m-%d", time.gmtime(start + 7200))
            path = root / "events" / "store=s1" / f"date={date}" / f"camera={cam}" / f"{sid}.parquet"
            sink = pa.BufferOutputStream()
            import pyarrow.parquet as pq

            pq.write_table(table, sink, compression="zstd")
            write_atomic(path, sink.getvalue().to_pybytes())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--lag-seconds", type=int, default=20)
    p.add_argument("--partition-windows", type=int, default=3600)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--per-day", type=int, default=2000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        p50, p99 = bench_lag(Path(tmp) / "lag", args.cameras, args.lag_seconds)
        print(f"replication lag at {args.cameras} cameras x 1 segment/s: p50 {p50 * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms (target 1000 ms, ratio {p99:.3f})")  # fmt: skip
        secs, n = bench_catch_up(Path(tmp) / "cu", args.cameras, args.partition_windows)
        print(f"catch-up of {n} segments ({args.cameras} cameras x {args.partition_windows} s partition): "
              f"{secs:.1f} s ({n / secs:.0f} segments/s; {args.partition_windows / secs:.1f}x real time)")  # fmt: skip
        year = Path(tmp) / "year"
        make_year(year, args.cameras, args.days, args.per_day)
        sql = "SELECT local_date, local_hour, sum(ins), sum(outs) FROM traffic_hourly GROUP BY ALL"
        run_query(year, TZ, sql)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            rows = run_query(year, TZ, sql).num_rows
            times.append(time.perf_counter() - t0)
        best = min(times)
        print(f"hourly traffic over {args.days} days x {args.cameras} cameras ({args.cameras * args.days} files, "
              f"{args.cameras * args.days * args.per_day} events, {rows} rows): {best * 1000:.0f} ms "
              f"(target 1000 ms, ratio {best:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
