"""DuckDB views over segments: exact counts with local dates and hours, empty datasets, temp files, errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from actors.events import Event
from cluster.errors import ConfigError, QueryError
from storage.segments import SegmentWriter
from storage.views import VIEW_NAMES, format_table, open_dataset, run_query

TZ = "Europe/London"  # BST (UTC+1) in July
VERSIONS = {"config_version": "cfg-1", "model_version": "yolo-1"}


def utc(hour: int, minute: int, day: int = 1, month: int = 7) -> float:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC).timestamp()


def line(cam: str, ts: float, track: int, line_id: str, direction: str) -> Event:
    return Event(ts, cam, track, "line_cross", line_id=line_id, direction=direction)


def exit_(cam: str, ts: float, track: int, zone: str, dwell: float) -> Event:
    return Event(ts, cam, track, "zone_exit", zone_id=zone, dwell_s=dwell)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two cameras, two windows; the second window is after local midnight (23:25 UTC = 00:25 BST)."""
    w = SegmentWriter(tmp_path, "s1", TZ, "ws-1")
    w1, w2 = (utc(22, 0), utc(22, 10)), (utc(23, 25), utc(23, 35))
    cam1_w1 = [
        line("cam1", utc(22, 1), 1, "L1", "in"),
        line("cam1", utc(22, 2), 2, "L1", "in"),
        line("cam1", utc(22, 3), 3, "L1", "out"),
        Event(utc(22, 5), "cam1", 1, "zone_enter", zone_id="Z1"),
        exit_("cam1", utc(22, 6), 1, "Z1", 60.0),
    ]
    cam1_w2 = [
        line("cam1", utc(23, 30), 4, "L1", "in"),  # 00:30 local, next date
        line("cam1", utc(23, 31), 1, "L1", "out"),
        exit_("cam1", utc(23, 32), 2, "Z1", 3600.0),  # entered 23:32 local on 07-01, left 00:32 on 07-02
        exit_("cam1", utc(23, 33), 4, "Z1", 30.0),
    ]
    w.write("cam1", w1[0], w1[1], cam1_w1, frames=6000, token=2, **VERSIONS)
    w.write("cam1", w2[0], w2[1], cam1_w2, frames=6000, token=2, **VERSIONS)
    w.write("cam2", w1[0], w1[1], [], frames=5990, token=2, **VERSIONS)
    w.write("cam2", w2[0], w2[1], [line("cam2", utc(23, 34), 7, "L2", "in")], frames=6000, token=2, **VERSIONS)
    return tmp_path


EXPECTED_COLUMNS = {
    "events": [
        "store_id", "camera_id", "ts", "ts_local", "local_date", "local_hour", "track_id", "kind", "line_id",
        "zone_id", "direction", "dwell_s", "node", "token", "config_version", "model_version", "segment_id", "seq",
    ],
    "visits": [
        "store_id", "camera_id", "zone_id", "track_id", "enter_ts", "exit_ts", "dwell_s", "enter_local",
        "exit_local", "local_date", "segment_id",
    ],
    "traffic_hourly": ["store_id", "camera_id", "line_id", "local_date", "local_hour", "ins", "outs"],
    "zone_dwell": ["store_id", "camera_id", "zone_id", "visits", "mean_dwell_s", "median_dwell_s", "p90_dwell_s"],
    "segment_meta": [
        "segment_id", "store_id", "camera_id", "window_start", "window_end", "window_start_local",
        "window_end_local", "covered_s", "frames", "rows", "node", "token", "config_version", "model_version",
        "timezone", "filename",
    ],
}  # fmt: skip


def test_event_counts_and_local_time(dataset: Path) -> None:
    con = open_dataset(dataset, TZ)
    assert con.execute("SELECT count(*) FROM events").fetchall() == [(10,)]
    assert con.execute("SELECT count(*) FROM segments_raw").fetchall() == [(10,)]
    row = con.execute(
        "SELECT ts_local, local_date, local_hour FROM events"
        " WHERE camera_id = 'cam1' AND track_id = 4 AND kind = 'line_cross'"
    ).fetchall()
    assert row == [(datetime(2024, 7, 2, 0, 30), date(2024, 7, 2), 0)]
    by_date = con.execute("SELECT local_date, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()
    assert by_date == [(date(2024, 7, 1), 5), (date(2024, 7, 2), 5)]
    partitions = con.execute("SELECT date, camera, count(*) FROM segments_raw GROUP BY ALL ORDER BY ALL").fetchall()
    assert partitions == [(date(2024, 7, 1), "cam1", 5), (date(2024, 7, 2), "cam1", 4), (date(2024, 7, 2), "cam2", 1)]


def test_traffic_hourly_uses_local_date_and_hour(dataset: Path) -> None:
    con = open_dataset(dataset, TZ)
    rows = con.execute(
        "SELECT camera_id, line_id, local_date, local_hour, ins, outs FROM traffic_hourly ORDER BY ALL"
    ).fetchall()
    assert rows == [
        ("cam1", "L1", date(2024, 7, 1), 23, 2, 1),
        ("cam1", "L1", date(2024, 7, 2), 0, 1, 1),
        ("cam2", "L2", date(2024, 7, 2), 0, 1, 0),
    ]


def test_visits_one_row_per_exit_with_enter_from_dwell(dataset: Path) -> None:
    con = open_dataset(dataset, TZ)
    rows = con.execute(
        "SELECT camera_id, zone_id, track_id, enter_ts, exit_ts, dwell_s, enter_local, exit_local, local_date"
        " FROM visits ORDER BY exit_ts"
    ).fetchall()
    assert [r[:3] for r in rows] == [("cam1", "Z1", 1), ("cam1", "Z1", 2), ("cam1", "Z1", 4)]
    crossing = rows[1]
    assert crossing[3] == datetime(2024, 7, 1, 22, 32, tzinfo=UTC)
    assert crossing[4] == datetime(2024, 7, 1, 23, 32, tzinfo=UTC)
    assert crossing[5:] == (3600.0, datetime(2024, 7, 1, 23, 32), datetime(2024, 7, 2, 0, 32), date(2024, 7, 1))
    assert rows[2][6:] == (datetime(2024, 7, 2, 0, 32, 30), datetime(2024, 7, 2, 0, 33), date(2024, 7, 2))


def test_zone_dwell_statistics(dataset: Path) -> None:
    con = open_dataset(dataset, TZ)
    rows = con.execute("SELECT * FROM zone_dwell").fetchall()
    # dwell 30, 60, 3600: mean 1230, median 60, p90 interpolated at 1.8 -> 60 + 0.8 * 3540 = 2892
    assert rows == [("s1", "cam1", "Z1", 3, 1230.0, 60.0, pytest.approx(2892.0))]


def test_segment_meta_lists_every_segment_including_empty_ones(dataset: Path) -> None:
    con = open_dataset(dataset, TZ)
    rows = con.execute(
        "SELECT camera_id, window_start_local, covered_s, frames, rows, token FROM segment_meta ORDER BY ALL"
    ).fetchall()
    assert rows == [
        ("cam1", datetime(2024, 7, 1, 23, 0), 600.0, 6000, 5, 2),
        ("cam1", datetime(2024, 7, 2, 0, 25), 600.0, 6000, 4, 2),
        ("cam2", datetime(2024, 7, 1, 23, 0), 600.0, 5990, 0, 2),
        ("cam2", datetime(2024, 7, 2, 0, 25), 600.0, 6000, 1, 2),
    ]


@pytest.mark.parametrize("make_dir", [False, True])
def test_empty_dataset_views_return_zero_rows_with_columns(tmp_path: Path, make_dir: bool) -> None:
    data_dir = tmp_path / "data"
    if make_dir:
        (data_dir / "events").mkdir(parents=True)
    con = open_dataset(data_dir, TZ)
    for name in VIEW_NAMES:
        assert con.execute(f"SELECT count(*) FROM {name}").fetchall() == [(0,)], name
    for name, columns in EXPECTED_COLUMNS.items():
        assert con.sql(f"SELECT * FROM {name}").columns == columns, name


def test_empty_and_full_segments_raw_have_the_same_columns(dataset: Path, tmp_path: Path) -> None:
    full = open_dataset(dataset, TZ).execute("DESCRIBE segments_raw").fetchall()
    empty = open_dataset(tmp_path / "none", TZ).execute("DESCRIBE segments_raw").fetchall()
    assert [r[:2] for r in empty] == [r[:2] for r in full]


def test_new_segments_are_seen_by_open_views_and_fresh_connections(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, "s1", TZ, "ws-1")
    empty_con = open_dataset(tmp_path, TZ)
    w.write("cam1", utc(10, 0), utc(10, 1), [line("cam1", utc(10, 0), 1, "L1", "in")], frames=1, token=0, **VERSIONS)
    con = open_dataset(tmp_path, TZ)
    assert con.execute("SELECT count(*) FROM events").fetchall() == [(1,)]
    w.write("cam1", utc(10, 1), utc(10, 2), [line("cam1", utc(10, 1), 2, "L1", "in")], frames=1, token=0, **VERSIONS)
    assert con.execute("SELECT count(*) FROM events").fetchall() == [(2,)]
    # views created over an empty folder stay empty until re-created
    assert empty_con.execute("SELECT count(*) FROM events").fetchall() == [(0,)]


def test_temp_files_are_never_read(dataset: Path) -> None:
    camera_dir = next((dataset / "events").glob("store=s1/date=2024-07-02/camera=cam1"))
    (camera_dir / ".cam1.999.ws-1.2.parquet.4242.beef.tmp").write_bytes(b"not parquet, half written")
    (camera_dir / ".cam1.998.ws-1.2.4242.beef.tmp").write_bytes(b"PAR1 garbage")
    con = open_dataset(dataset, TZ)
    assert con.execute("SELECT count(*) FROM events").fetchall() == [(10,)]
    assert con.execute("SELECT count(*) FROM segment_meta").fetchall() == [(4,)]


def test_winter_time_keeps_the_utc_date(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, "s1", TZ, "ws-1")
    t = utc(23, 30, day=15, month=1)
    w.write("cam1", t, t + 60, [line("cam1", t, 1, "L1", "in")], frames=1, token=0, **VERSIONS)
    rows = run_query(tmp_path, TZ, "SELECT local_date, local_hour, ins FROM traffic_hourly").to_pylist()
    assert rows == [{"local_date": date(2024, 1, 15), "local_hour": 23, "ins": 1}]


def test_run_query_returns_arrow(dataset: Path) -> None:
    table = run_query(dataset, TZ, "SELECT camera_id, count(*) AS n FROM events GROUP BY 1 ORDER BY 1")
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == [{"camera_id": "cam1", "n": 9}, {"camera_id": "cam2", "n": 1}]
    names = run_query(dataset, TZ, "SHOW TABLES").column("name").to_pylist()
    assert sorted(names) == sorted(VIEW_NAMES)


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("SELECT * FROM no_such_view", "no_such_view does not exist"),
        ("SELECT nope FROM events", "nope"),
        ("SELEC 1", "syntax error"),
    ],
)
def test_run_query_errors_name_the_views(dataset: Path, sql: str, match: str) -> None:
    with pytest.raises(QueryError, match=match) as caught:
        run_query(dataset, TZ, sql)
    assert "SHOW TABLES" in str(caught.value)
    assert "traffic_hourly" in str(caught.value)


def test_unknown_timezone_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown time zone"):
        open_dataset(tmp_path, "Europe/Atlantis")


def test_format_table() -> None:
    table = pa.table({"camera_id": ["cam1", "cam22"], "ins": [3, 12], "mean": [1.5, None]})
    assert format_table(table) == (
        "camera_id  ins  mean\n---------  ---  ----\ncam1         3   1.5\ncam22       12  NULL\n(2 rows)"
    )
    assert format_table(table, max_rows=1).endswith("cam1         3   1.5\n(2 rows, first 1 shown)")
    assert format_table(pa.table({"s": ["x" * 50]}), max_width=5).splitlines()[2] == "xxxx…"


def write_day(w: SegmentWriter, start: datetime, end: datetime, step_s: int, gap: tuple[datetime, datetime]) -> None:
    """Empty 1-camera segments of ``step_s`` seconds from ``start`` to ``end``, except in ``gap``."""
    t = start.timestamp()
    while t < end.timestamp():
        if not gap[0].timestamp() <= t < gap[1].timestamp():
            w.write("cam1", t, t + step_s, [], frames=10, token=1, **VERSIONS)
        t += step_s


@pytest.mark.parametrize(
    ("local_date", "start", "end", "gap", "expected"),
    [
        # Spring: local midnight is 00:00 UTC (GMT), the next one 23:00 UTC (BST); 01:00 local never happens.
        (
            date(2026, 3, 29),
            datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
            datetime(2026, 3, 29, 23, 0, tzinfo=UTC),
            (datetime(2026, 3, 29, 1, 10, tzinfo=UTC), datetime(2026, 3, 29, 1, 20, tzinfo=UTC)),  # 02:10 BST
            [(0, 0, 3600.0, 3600), (2, 3600, 3000.0, 3600)] + [(h, 3600, 3600.0, 3600) for h in range(3, 24)],
        ),
        # Autumn: 23:00 UTC the day before (BST) to 00:00 UTC the day after (GMT); 01:00 local happens twice.
        (
            date(2026, 10, 25),
            datetime(2026, 10, 24, 23, 0, tzinfo=UTC),
            datetime(2026, 10, 26, 0, 0, tzinfo=UTC),
            (datetime(2026, 10, 25, 1, 10, tzinfo=UTC), datetime(2026, 10, 25, 1, 20, tzinfo=UTC)),  # 01:10 GMT
            [(0, 3600, 3600.0, 3600), (1, 3600, 3600.0, 3600), (1, 0, 3000.0, 3600)]
            + [(h, 0, 3600.0, 3600) for h in range(2, 24)],
        ),
    ],
)
def test_coverage_is_exact_on_dst_days(
    tmp_path: Path,
    local_date: date,
    start: datetime,
    end: datetime,
    gap: tuple[datetime, datetime],
    expected: list[tuple[int, int, float, int]],
) -> None:
    write_day(SegmentWriter(tmp_path, "s1", TZ, "ws-1"), start, end, 600, gap)
    con = open_dataset(tmp_path, TZ)
    rows = con.execute(
        "SELECT local_hour, utc_offset_s, seconds_covered, hour_s FROM coverage"
        " WHERE local_date = ? ORDER BY hour_start",
        [local_date],
    ).fetchall()
    assert rows == expected
    day_s = round(end.timestamp() - start.timestamp())
    assert con.execute(
        "SELECT count(*), sum(seconds_covered), sum(hour_s), string_agg(DISTINCT nodes) FROM coverage"
    ).fetchall() == [(len(expected), day_s - 600.0, day_s, "ws-1")]


def test_local_time_of_events_across_dst_changes(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, "s1", TZ, "ws-1")
    instants = [
        datetime(2026, 3, 29, 0, 59, 59, 500000, tzinfo=UTC),  # 00:59:59.5 GMT
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 02:00 BST
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 01:30 BST
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),  # 01:30 GMT
    ]
    for i, t in enumerate(instants):
        w.write("cam1", t.timestamp(), t.timestamp() + 1, [line("cam1", t.timestamp(), i, "L1", "in")], frames=1,
                token=1, **VERSIONS)  # fmt: skip
    con = open_dataset(tmp_path, TZ)
    assert con.execute("SELECT ts_local, local_date, local_hour FROM events ORDER BY ts").fetchall() == [
        (datetime(2026, 3, 29, 0, 59, 59, 500000), date(2026, 3, 29), 0),
        (datetime(2026, 3, 29, 2, 0), date(2026, 3, 29), 2),
        (datetime(2026, 10, 25, 1, 30), date(2026, 10, 25), 1),
        (datetime(2026, 10, 25, 1, 30), date(2026, 10, 25), 1),
    ]
    rows = con.execute("SELECT local_date, local_hour, ins FROM traffic_hourly ORDER BY ALL").fetchall()
    assert rows == [(date(2026, 3, 29), 0, 1), (date(2026, 3, 29), 2, 1), (date(2026, 10, 25), 1, 2)]
