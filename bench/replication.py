"""Replication and query bench: push lag at steady load, catch-up after a partition, hourly traffic over a year.

``PYTHONPATH=. python bench/replication.py [--cameras 16] [--lag-seconds 20] [--partition-windows 3600] [--days 365]``
Targets: lag p99 <= 1 s on loopback; the hourly-traffic query over a compacted year <= 1 s; with mutual TLS and
signed files, push lag p99 at most 10 % above plain text (issue 12).

- Lag and catch-up run twice, side by side: plain text (the opt-out) and TLS (mutual TLS, signed calls, every file
  signed by its writer and verified by the receiver, a CA made on the fly); the TLS/plain ratios are printed.
- Lag: ws-a writes one 1-second segment per camera per second and pushes it; p50/p99 of write-to-acknowledged
  (from before the write, so signing is counted).
- Catch-up: ws-b is down while ws-a writes ``--partition-windows`` seconds of every camera (written before the
  clock starts, ws-a started and its catalog scanned); the clock runs from ws-b's start until both live catalogs
  are identical (same ids, same sha256).
- Year: one day file per camera and local day (what hour and day compaction leave), then :func:`compact` rolls the
  closed months up into month files; the query (``run_query``: catalog scan, views, query, on a fresh connection)
  is timed over the day files and over the month files. Wall and CPU seconds are printed: these machines are shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.pki import CertDir, Identity
from failover.etcd_cluster import free_port
from storage.catalog import Run, runs_to_kv
from storage.compaction import compact
from storage.replication import Replicator
from storage.schema import EVENT_SCHEMA, SegmentMeta, with_segment_meta
from storage.segments import SegmentWriter, load_timezone, write_atomic
from storage.views import run_query
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events


def make_pki(root: Path) -> Path:
    """A store CA with node certificates for ws-a and ws-b on loopback."""
    cd = CertDir(root / "pki")
    cd.init("s1")
    for node in ("ws-a", "ws-b"):
        cd.issue(node, "node", ["127.0.0.1"])
    return cd.path


def ident(pki: Path | None, node: str) -> Identity | None:
    return Identity.load(pki, node) if pki else None


def pair(root: Path, pki: Path | None = None) -> tuple[Replicator, Replicator]:
    pa_, pb = free_port(), free_port()
    a = Replicator(root / "a", "s1", "ws-a", f"grpc://127.0.0.1:{pb}", port=pa_, anti_entropy_s=2.0,
                   identity=ident(pki, "ws-a"))  # fmt: skip
    b = Replicator(root / "b", "s1", "ws-b", f"grpc://127.0.0.1:{pa_}", port=pb, anti_entropy_s=2.0,
                   identity=ident(pki, "ws-b"))  # fmt: skip
    return a, b


def bench_lag(root: Path, cameras: int, seconds: int, pki: Path | None = None) -> tuple[float, float]:
    a, b = pair(root, pki)
    a.start()
    b.start()
    try:
        identity = ident(pki, "ws-a")
        w = SegmentWriter(root / "a", "s1", TZ, "ws-a", signer=identity.signer() if identity else None)
        t0 = time.time()
        for i in range(seconds):
            for c in range(cameras):
                cam = f"cam-{c}"
                at = time.time()
                info = w.write(cam, DEFAULT_BASE + i, DEFAULT_BASE + i + 1, window_events(cam, DEFAULT_BASE, i, 5, 1),
                               frames=10, token=1, config_version="c", model_version="m")  # fmt: skip
                a.notify(info.segment_id, info.path, info.sha256, at)
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


class _FastWriter(SegmentWriter):
    """The same files as :class:`SegmentWriter`, without fsync: writing the hour of segments is not what is timed."""

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def bench_catch_up(root: Path, cameras: int, windows: int, pki: Path | None = None) -> tuple[float, int, float]:
    """(seconds from ws-b's start to identical catalogs, files, seconds ws-a took to write them)."""
    identity = ident(pki, "ws-a")
    w = _FastWriter(root / "a", "s1", TZ, "ws-a", signer=identity.signer() if identity else None)
    t_write = time.monotonic()
    for i in range(windows):
        for c in range(cameras):
            cam = f"cam-{c}"
            w.write(cam, DEFAULT_BASE + i, DEFAULT_BASE + i + 1, window_events(cam, DEFAULT_BASE, i, 2, 1),
                    frames=10, token=1, config_version="c", model_version="m")  # fmt: skip
    t_write = time.monotonic() - t_write
    a, b = pair(root, pki)
    a.start()
    want = a.live_catalog()
    t0 = time.monotonic()
    b.start()
    try:
        for _ in range(100_000):
            if b.status()["segments"] >= len(want) and b.live_catalog() == want:
                break
            if time.monotonic() - t0 > 3600:
                raise SystemExit(f"catch-up not done after an hour: {b.status()['segments']} of {len(want)} files")
            time.sleep(0.5)
        return time.monotonic() - t0, len(b.live_catalog()), t_write
    finally:
        a.stop()
        b.stop()


def make_year(root: Path, cameras: int, days: int, per_day: int) -> None:
    """Day-level compacted files written directly, one per camera and local day (23, 24 or 25 hours long), from
    2024-07-01: ``per_day`` line crossings per camera and day, between 08:00 and 20:00 local."""
    tz = load_timezone(TZ)
    first = dt.date(2024, 7, 1)
    for c in range(cameras):
        cam = f"cam-{c}"
        for d in range(days):
            day = first + dt.timedelta(days=d)
            start = dt.datetime.combine(day, dt.time(0), tz).timestamp()
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tz).timestamp()
            n = per_day
            ts = [start + 8 * 3600 + (k * 12 * 3600) / n for k in range(n)]
            sid = f"{cam}.{round(start * 1000)}.day~bench{d:04d}"
            cols = {
                "store_id": ["s1"] * n, "camera_id": [cam] * n,
                "ts": pa.array([round(t * 1e6) for t in ts], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "track_id": list(range(n)), "kind": ["line_cross"] * n, "line_id": ["L1"] * n, "zone_id": [None] * n,
                "direction": ["in" if k % 2 else "out" for k in range(n)], "dwell_s": [None] * n,
                "node": ["ws-a"] * n, "token": [1] * n, "config_version": ["c"] * n, "model_version": ["m"] * n,
                "segment_id": [sid] * n, "seq": pa.array(range(n), pa.int32()),
            }  # fmt: skip
            table = pa.table(cols, schema=EVENT_SCHEMA)
            meta = SegmentMeta(sid, "s1", cam, start, end, round(end - start) * 10, "ws-a", 1, n, "c", "m", TZ)
            table = with_segment_meta(table, meta)
            run = Run(start, end, "ws-a", 1, round(end - start) * 10)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **runs_to_kv([run], [])})
            path = root / "events" / "store=s1" / f"date={day.isoformat()}" / f"camera={cam}" / f"{sid}.parquet"
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            write_atomic(path, sink.getvalue().to_pybytes())


def time_query(data: Path, sql: str, runs: int = 3) -> tuple[float, float, int]:
    """(best wall s, CPU s of that run, rows) of ``run_query`` on a fresh connection, after one warm-up run."""
    run_query(data, TZ, sql)
    best = (float("inf"), 0.0, 0)
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = run_query(data, TZ, sql).num_rows
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0, rows))
    return best


def n_files(data: Path) -> int:
    return sum(1 for _ in (data / "events").rglob("*.parquet"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--lag-seconds", type=int, default=20)
    p.add_argument("--partition-windows", type=int, default=3600)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--per-day", type=int, default=2000)
    p.add_argument("--only", choices=("lag", "catch-up", "year"), help="run one part only")
    p.add_argument("--repeat", type=int, default=3, help="lag runs per mode, interleaved (the median is reported)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp))
        modes = [("plain", None), ("tls", pki)]
        if args.only in (None, "lag"):
            lag: dict[str, list[tuple[float, float]]] = {"plain": [], "tls": []}
            for r in range(args.repeat):  # interleaved: a shared machine drifts between runs
                for mode, p in modes:
                    lag[mode].append(bench_lag(Path(tmp) / f"lag-{mode}-{r}", args.cameras, args.lag_seconds, p))
            med = {m: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for m, v in lag.items()}
            for mode, (p50, p99) in med.items():
                runs = ", ".join(f"{x[1] * 1000:.0f}" for x in lag[mode])
                print(f"{mode:>5}: push lag at {args.cameras} cameras x 1 segment/s ({args.repeat} runs, median): "
                      f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms (p99 of each run: {runs} ms; target 1000 ms)",
                      flush=True)  # fmt: skip
            r50, r99 = (med["tls"][k] / med["plain"][k] for k in (0, 1))
            print(f"  tls/plain: p50 x{r50:.2f}, p99 x{r99:.2f} (bound: p99 x1.10; "
                  f"{(med['tls'][1] - med['plain'][1]) * 1000:+.1f} ms)", flush=True)  # fmt: skip
        if args.only in (None, "catch-up"):
            cu = {}
            for mode, p in modes:
                cu[mode] = secs, n, wrote = bench_catch_up(Path(tmp) / f"cu-{mode}", args.cameras,
                                                           args.partition_windows, p)  # fmt: skip
                print(f"{mode:>5}: catch-up after a {args.partition_windows} s partition ({args.cameras} cameras, "
                      f"{n} segments, written in {wrote:.0f} s): {secs:.1f} s to identical catalogs "
                      f"({n / secs:.0f} segments/s; {args.partition_windows / secs:.1f}x real time)",
                      flush=True)  # fmt: skip
            print(f"  tls/plain: catch-up x{cu['tls'][0] / cu['plain'][0]:.2f}", flush=True)
        if args.only not in (None, "year"):
            return
        year = Path(tmp) / "year"
        make_year(year, args.cameras, args.days, args.per_day)
        sql = "SELECT local_date, local_hour, sum(ins), sum(outs) FROM traffic_hourly GROUP BY ALL"
        events = args.cameras * args.days * args.per_day
        before = n_files(year)
        wall, cpu, rows = time_query(year, sql)
        print(f"hourly traffic over {args.days} days x {args.cameras} cameras, day files ({before} files, "
              f"{events} events, {rows} rows): {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU")  # fmt: skip
        t0 = time.perf_counter()
        now = time.time()
        report = compact(year, node="ws-a", now=now, grace_s=0)
        compact(year, node="ws-a", now=now, grace_s=0)  # deletes the superseded day files
        after = n_files(year)
        print(f"month compaction: {len(report.written)} month files written, {before} -> {after} files "
              f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        wall, cpu, rows = time_query(year, sql)
        print(f"hourly traffic over {args.days} days x {args.cameras} cameras, month files ({after} files, "
              f"{events} events, {rows} rows): {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU "
              f"(target 1000 ms, ratio {wall:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
