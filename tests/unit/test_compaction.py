"""Compaction: hour then day files, exact counts before, during (a concurrent reader) and after; late segments."""

from __future__ import annotations

import threading
from pathlib import Path

from storage.catalog import Catalog
from storage.compaction import compact, level_of
from storage.retention import enforce_retention, expired
from storage.segments import SegmentWriter
from storage.views import open_dataset
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events

K = 2
NOW = DEFAULT_BASE + 3 * 86400


def write(w: SegmentWriter, cam: str, windows: range, token: int = 1) -> None:
    for i in windows:
        ws = DEFAULT_BASE + i
        w.write(cam, ws, ws + 1, window_events(cam, DEFAULT_BASE, i, K, 1), frames=10, token=token,
                config_version="c", model_version="m")  # fmt: skip


def count(data: Path) -> int:
    con = open_dataset(data, TZ)
    try:
        return int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
    finally:
        con.close()


def test_compaction_never_shows_an_event_twice_or_not_at_all(tmp_path: Path) -> None:
    a, b = SegmentWriter(tmp_path, "s1", TZ, "ws-a"), SegmentWriter(tmp_path, "s1", TZ, "ws-b")
    write(a, "cam-1", range(0, 120))  # spans hours 10:00..10:02 UTC; all in one local hour
    write(a, "cam-1", range(3600, 3630))  # next hour
    write(b, "cam-1", range(100, 130), token=2)  # overlap of 20 windows with a higher token
    expected = (120 + 30 + 10) * K
    assert count(tmp_path) == expected
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        for _ in range(10_000):
            seen.append(count(tmp_path))
            if stop.is_set():
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        report = compact(tmp_path, node="ws-a", now=NOW, min_age_s=0, day_min_age_s=10**9, grace_s=600)
    finally:
        stop.set()
        t.join(timeout=60)
    assert len(report.written) == 2 and report.errors == []
    assert len(seen) >= 1 and set(seen) == {expected}
    assert count(tmp_path) == expected
    state = Catalog(tmp_path).scan()
    assert len(state.superseded) == 180 and len(state.live()) == 2
    report = compact(tmp_path, node="ws-a", now=NOW, min_age_s=0, day_min_age_s=10**9, grace_s=0)
    assert len(report.deleted) == 180
    assert count(tmp_path) == expected
    con = open_dataset(tmp_path, TZ)
    assert con.execute("SELECT sum(seconds_covered) FROM coverage").fetchall() == [(160.0,)]
    assert con.execute("SELECT count(*) FROM events_audit WHERE NOT credited").fetchall() == [(20 * K,)]


def test_late_segment_is_merged_and_days_roll_up(tmp_path: Path) -> None:
    a = SegmentWriter(tmp_path, "s1", TZ, "ws-a")
    write(a, "cam-1", range(0, 10))
    compact(tmp_path, node="ws-a", now=NOW, min_age_s=0, day_min_age_s=10**9, grace_s=0)
    write(a, "cam-1", range(10, 15))  # late for the compacted hour
    assert count(tmp_path) == 15 * K
    compact(tmp_path, node="ws-a", now=NOW, min_age_s=0, day_min_age_s=10**9, grace_s=0)
    compact(tmp_path, node="ws-a", now=NOW, min_age_s=0, day_min_age_s=10**9, grace_s=0)
    assert count(tmp_path) == 15 * K
    write(a, "cam-1", range(7200, 7205))
    compact(tmp_path, node="ws-a", now=NOW, min_age_s=0, day_min_age_s=0, grace_s=0)
    compact(tmp_path, node="ws-a", now=NOW, min_age_s=0, day_min_age_s=0, grace_s=0)
    files = sorted(p.stem for p in (tmp_path / "events").rglob("*.parquet"))
    assert [level_of(f) for f in files] == ["day"]
    assert count(tmp_path) == 20 * K


def test_retention_deletes_old_files_and_refuses_them(tmp_path: Path) -> None:
    write(SegmentWriter(tmp_path, "s1", TZ, "ws-a"), "cam-1", range(0, 3))
    assert enforce_retention(tmp_path, days=7, timezone=TZ, node="ws-a", now=NOW) == []
    assert len(enforce_retention(tmp_path, days=2, timezone=TZ, node="ws-a", now=NOW)) == 3
    assert list((tmp_path / "events").glob("*/*")) == []  # no empty day folder left behind
    assert expired(DEFAULT_BASE + 3, 2, TZ, NOW) and not expired(DEFAULT_BASE + 3, 7, TZ, NOW)
    assert count(tmp_path) == 0


def test_closed_months_roll_up_into_one_file_per_camera(tmp_path: Path) -> None:
    a = SegmentWriter(tmp_path, "s1", TZ, "ws-a")
    aug_1 = DEFAULT_BASE + 31 * 86400  # 2024-08-01T10:00Z
    for cam in ("cam-1", "cam-2"):
        write(a, cam, range(0, 5))  # 2024-07-01
        write(a, cam, range(3 * 86400, 3 * 86400 + 5))  # 2024-07-04
        write(a, cam, range(31 * 86400, 31 * 86400 + 5))  # 2024-08-01
    now = aug_1 + 9 * 86400  # July is closed, August is not
    ages = {"min_age_s": 0, "day_min_age_s": 0, "month_min_age_s": 0, "grace_s": 0}
    report = compact(tmp_path, node="ws-a", now=now, **ages)
    # one hour file per camera and hour; a day of one hour file stays as it is; July's files become one month file
    assert sorted(level_of(c) for c in report.written) == ["hour"] * 6 + ["month"] * 2
    assert count(tmp_path) == 30 * K
    compact(tmp_path, node="ws-a", now=now, **ages)  # deletes every superseded source
    files = sorted((p.parent.name, level_of(p.stem)) for p in (tmp_path / "events").rglob("*.parquet"))
    assert files == [
        ("camera=cam-1", "hour"),
        ("camera=cam-1", "month"),
        ("camera=cam-2", "hour"),
        ("camera=cam-2", "month"),
    ]
    # the emptied day folders are gone: a query's glob walks the folders that hold files only
    dirs = sorted(str(d.relative_to(tmp_path / "events")) for d in (tmp_path / "events").glob("*/*/*"))
    assert dirs == [
        "store=s1/date=2024-07-01/camera=cam-1",
        "store=s1/date=2024-07-01/camera=cam-2",
        "store=s1/date=2024-08-01/camera=cam-1",
        "store=s1/date=2024-08-01/camera=cam-2",
    ]
    assert count(tmp_path) == 30 * K
    write(a, "cam-1", range(86400, 86402))  # late for the compacted July (2024-07-02)
    assert count(tmp_path) == 32 * K
    compact(tmp_path, node="ws-a", now=now, **ages)
    compact(tmp_path, node="ws-a", now=now, **ages)
    assert len(list((tmp_path / "events").rglob("*.parquet"))) == 4
    assert count(tmp_path) == 32 * K
    con = open_dataset(tmp_path, TZ)
    assert con.execute("SELECT sum(seconds_covered) FROM coverage").fetchall() == [(32.0,)]
    assert con.execute("SELECT count(*) FROM events_audit WHERE NOT credited").fetchall() == [(0,)]
