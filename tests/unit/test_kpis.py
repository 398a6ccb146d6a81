"""KPI views over hand-made segments: exact numbers, DST days in London, overlap of two producers, versioned
definitions, several stores, the analytics database file and the report's CSV/HTML agreement."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest

from actors.events import Event
from cluster.errors import ConfigError
from cluster.report import write_report
from storage.analytics import (
    DEFINITIONS_FILE,
    STORE_FILE,
    connect_store,
    ensure_store_file,
    load_definitions,
    merge_stores,
    open_analytics,
    open_merged_analytics,
    record_definition,
)
from storage.kpis import KPI_VIEW_NAMES, KpiDefinition, LineSpec, StoreSetup, ZoneSpec
from storage.segments import SegmentWriter

TZ = "Europe/London"
V = {"config_version": "cfg-1", "model_version": "m-1"}
LINES = (LineSpec("cam1", "door", "entrance"), LineSpec("cam1", "street", "pass_by"))
ZONES = (ZoneSpec("cam1", "shelf", 5.0), ZoneSpec("cam2", "till", 0.0))
OPEN = ("08:00", "20:00")
V1 = StoreSetup("s1", TZ, LINES, ZONES, bounce_s=10.0, visit_merge_s=5.0, opening_hours=OPEN)
V2 = StoreSetup("s1", TZ, LINES, ZONES, bounce_s=45.0, visit_merge_s=5.0, opening_hours=OPEN)


def utc(y: int, mo: int, d: int, h: int, mi: int = 0, s: float = 0.0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp() + s


def bst(mo: int, d: int, h: int, mi: int = 0, s: float = 0.0) -> float:
    """2026 local summer time in London (UTC+1)."""
    return utc(2026, mo, d, h - 1, mi, s) if h >= 1 else utc(2026, mo, d - 1, 23, mi, s)


def cross(ts: float, track: int, line: str, direction: str, cam: str = "cam1") -> Event:
    return Event(ts, cam, track, "line_cross", line_id=line, direction=direction)


def exit_(ts: float, track: int, zone: str, dwell: float, cam: str = "cam1") -> Event:
    return Event(ts, cam, track, "zone_exit", zone_id=zone, dwell_s=dwell)


def write_hours(w: SegmentWriter, cam: str, start: float, end: float, events: list[Event], token: int = 1) -> None:
    """Hourly segments covering [start, end), each with the events in its window."""
    t = start
    while t < end:
        u = min(t + 3600.0, end)
        w.write(cam, t, u, [e for e in events if t <= e.ts < u], frames=100, token=token, **V)
        t = u


# Events of cam1, by day.
SPRING = [cross(utc(2026, 3, 29, 0, 30), 1, "door", "in")]  # 00:30 GMT, hour 0
SPRING += [cross(utc(2026, 3, 29, 1, 30), 2, "door", "in"), cross(utc(2026, 3, 29, 1, 40), 3, "door", "in")]  # 02:30
SPRING += [exit_(utc(2026, 3, 29, 9, 0, 20), 20, "shelf", 20.0)]  # 10:00 BST, 20 s: no bounce under v1
AUTUMN = [cross(utc(2026, 10, 25, 0, 30), 4, "door", "in")]  # 01:30 BST (first 01:00 hour)
AUTUMN += [cross(utc(2026, 10, 25, 1, 30), 5, "door", "in"), cross(utc(2026, 10, 25, 1, 31), 6, "door", "out")]  # GMT
JULY = [
    cross(bst(7, 1, 7, 30), 30, "door", "in"),  # before opening: not in occupancy
    cross(bst(7, 1, 9, 0, 10), 31, "door", "in"),
    cross(bst(7, 1, 9, 0, 20), 32, "door", "in"),
    cross(bst(7, 1, 9, 5), 31, "door", "out"),
    cross(bst(7, 1, 9, 6), 32, "door", "out"),
    cross(bst(7, 1, 9, 7), 33, "door", "out"),  # one more out than in: clamped at 0
    cross(bst(7, 1, 9, 10), 34, "door", "in"),
    cross(bst(7, 1, 19, 59), 35, "door", "in"),
    cross(bst(7, 1, 20, 30), 35, "door", "out"),  # after closing: not in occupancy
    *[cross(bst(7, 1, 14, 0, 10.0 * i), 100 + i, "street", "in" if i % 2 else "out") for i in range(15)],
    exit_(bst(7, 1, 10, 0, 30), 10, "shelf", 20.0),  # 10:00:10-10:00:30
    exit_(bst(7, 1, 10, 1, 0), 10, "shelf", 27.0),  # 10:00:33-10:01:00: gap 3 s < 5: one visit of 50 s
    exit_(bst(7, 1, 11, 0, 8), 11, "shelf", 8.0),  # counted (>= 5), bounce
    exit_(bst(7, 1, 12, 0, 3), 12, "shelf", 3.0),  # under min_dwell: not a KPI visit
    exit_(bst(7, 1, 13, 0, 40), 13, "shelf", 40.0),
]
# cam2: two producers for the same window (handover overlap): only token 2 is counted.
CAM2_T1 = [exit_(bst(7, 1, 9, 10 + i), 40 + i, "till", 10.0, cam="cam2") for i in range(3)]
CAM2_T2 = [exit_(bst(7, 1, 9, 12), 50, "till", 20.0, cam="cam2"), exit_(bst(7, 1, 9, 20), 51, "till", 30.0, cam="cam2")]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    data = tmp_path / "s1"
    w1 = SegmentWriter(data, "s1", TZ, "ws-1")
    write_hours(w1, "cam1", utc(2026, 3, 29, 0), utc(2026, 3, 29, 23), SPRING)
    write_hours(w1, "cam1", utc(2026, 10, 24, 23), utc(2026, 10, 26, 0), AUTUMN)
    write_hours(w1, "cam1", utc(2026, 6, 30, 23), utc(2026, 7, 1, 23), JULY)
    w1.write("cam2", bst(7, 1, 9), bst(7, 1, 9, 30), CAM2_T1, frames=100, token=1, **V)
    SegmentWriter(data, "s1", TZ, "ws-2").write(
        "cam2", bst(7, 1, 9), bst(7, 1, 9, 30), CAM2_T2, frames=100, token=2, **V
    )
    record_definition(data, V1.definition(), effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    record_definition(data, V2.definition(), effective_from=datetime(2026, 6, 30, 12, tzinfo=UTC))
    return data


@pytest.fixture
def con(dataset: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = connect_store(dataset, V2)
    yield c
    c.close()


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def test_spring_dst_day_has_23_hours(con: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        con,
        "SELECT local_hour, utc_offset_s, entries, coverage FROM traffic_hourly"
        " WHERE local_date = DATE '2026-03-29' ORDER BY hour_start",
    )
    assert [h for h, *_ in got] == [0, *range(2, 24)]
    assert [(h, o, e) for h, o, e, _ in got if e] == [(0, 0, 1), (2, 3600, 2)]
    assert all(c == 1.0 for *_, c in got)
    assert rows(con, "SELECT hours, entries, exits, coverage FROM traffic_daily WHERE local_date = '2026-03-29'") == [
        (23, 3, 0, 1.0)
    ]
    assert rows(con, "SELECT count(*) FROM occupancy WHERE local_date = '2026-03-29'") == [(720,)]


def test_autumn_dst_day_has_25_hours(con: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        con,
        "SELECT local_hour, utc_offset_s, entries, exits, coverage FROM traffic_hourly"
        " WHERE local_date = DATE '2026-10-25' ORDER BY hour_start",
    )
    assert [h for h, *_ in got] == [0, 1, 1, *range(2, 24)]
    assert [r for r in got if r[2] or r[3]] == [(1, 3600, 1, 0, 1.0), (1, 0, 1, 1, 1.0)]
    assert rows(con, "SELECT hours, entries, exits, coverage FROM traffic_daily WHERE local_date = '2026-10-25'") == [
        (25, 2, 1, 1.0)
    ]
    assert rows(con, "SELECT count(*), sum(hour_s) FROM coverage WHERE local_date = '2026-10-25'") == [(25, 90000)]


def test_occupancy_clamped_and_reset_at_closing(con: duckdb.DuckDBPyConnection) -> None:
    occ = dict(
        rows(con, "SELECT local_time, occupancy FROM occupancy WHERE local_date = '2026-07-01' ORDER BY minute_start")
    )
    assert len(occ) == 12 * 60 and min(occ) == "08:00" and max(occ) == "19:59"
    expected = {"08:59": 0, "09:00": 2, "09:04": 2, "09:05": 1, "09:06": 0, "09:07": 0, "09:09": 0, "09:10": 1}
    expected |= {"19:58": 1, "19:59": 2}
    assert {k: occ[k] for k in expected} == expected
    assert min(occ.values()) == 0 and max(occ.values()) == 2
    # The 07:30 entry (before opening) and the 20:30 exit (after closing) do not count; a new day starts at 0.
    assert rows(con, "SELECT sum(ins), sum(outs) FROM occupancy WHERE local_date = '2026-07-01'") == [(4, 3)]
    assert rows(con, "SELECT max(occupancy) FROM occupancy WHERE local_date = '2026-10-25'") == [(0,)]  # 01:30: closed


def test_visits_merge_min_dwell_zone_dwell_and_bounce(con: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        con,
        "SELECT track_id, dwell_s, pieces, counted, bounce FROM visits"
        " WHERE zone_id = 'shelf' AND local_date = '2026-07-01' ORDER BY enter_ts",
    )
    assert got == [(10, 50.0, 2, True, False), (11, 8.0, 1, True, True), (12, 3.0, 1, False, False),
                   (13, 40.0, 1, True, True)]  # fmt: skip
    assert rows(
        con,
        "SELECT visits, mean_dwell_s, median_dwell_s, p90_dwell_s FROM zone_dwell"
        " WHERE zone_id = 'shelf' AND local_date = '2026-07-01'",
    ) == [(3, 98.0 / 3, 40.0, 48.0)]
    assert rows(
        con,
        "SELECT visits, bounces, bounce_rate, bounce_s FROM bounce_rate"
        " WHERE local_date = '2026-07-01' AND zone_id = 'shelf'",
    ) == [(3, 2, 2 / 3, 45.0)]


def test_capture_rate(con: duckdb.DuckDBPyConnection) -> None:
    assert rows(
        con, "SELECT entries, passers_by, capture_rate, coverage FROM capture_rate WHERE local_date = '2026-07-01'"
    ) == [(5, 15, 0.25, 1.0)]


def test_peak_hours(con: duckdb.DuckDBPyConnection) -> None:
    assert rows(con, "SELECT local_hour, entries FROM peak_hours WHERE local_date = '2026-07-01' AND rank = 1") == [
        (9, 3)
    ]


def test_overlap_of_two_producers_counts_token_2_only(con: duckdb.DuckDBPyConnection) -> None:
    assert rows(
        con, "SELECT visits, median_dwell_s FROM zone_dwell WHERE zone_id = 'till' AND local_date = '2026-07-01'"
    ) == [(2, 25.0)]
    assert rows(con, "SELECT local_hour, seconds_covered, share FROM coverage WHERE camera_id = 'cam2'") == [
        (9, 1800.0, 0.5)
    ]
    assert rows(con, "SELECT share FROM coverage_daily WHERE camera_id = 'cam2'") == [(1800 / 86400,)]


def test_each_day_uses_the_definition_in_force(dataset: Path, con: duckdb.DuckDBPyConnection) -> None:
    v1, v2 = V1.definition().version(), V2.definition().version()
    assert v1 != v2
    # 2026-03-29: v1 (bounce 10 s): the 20 s visit is no bounce; 2026-07-01: v2 (bounce 45 s).
    assert rows(con, "SELECT local_date, bounces, kpi_version FROM bounce_rate ORDER BY local_date, zone_id") == [
        (date(2026, 3, 29), 0, v1), (date(2026, 7, 1), 2, v2), (date(2026, 7, 1), 2, v2)
    ]  # fmt: skip
    assert rows(con, "SELECT DISTINCT kpi_version FROM traffic_daily WHERE local_date = '2026-10-25'") == [(v2,)]
    assert len(load_definitions(dataset)) == 2  # opening with v2 again appended nothing


def test_record_definition_appends_only_on_change(tmp_path: Path) -> None:
    d1 = KpiDefinition(10.0, 5.0, ("00:00", "24:00"))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert len(record_definition(tmp_path, d1, effective_from=t0)) == 1
    assert len(record_definition(tmp_path, d1)) == 1
    d2 = KpiDefinition(12.0, 5.0, ("00:00", "24:00"))
    with pytest.raises(ConfigError, match="never rewritten"):
        record_definition(tmp_path, d2, effective_from=datetime(2025, 1, 1, tzinfo=UTC))
    hist = record_definition(tmp_path, d2, effective_from=datetime(2026, 2, 1, tzinfo=UTC))
    lines = (tmp_path / DEFINITIONS_FILE).read_text().splitlines()
    assert [json.loads(x)["version"] for x in lines] == [d1.version(), d2.version()] == [h.version for h in hist]
    with pytest.raises(ConfigError, match="opening must be before closing"):
        KpiDefinition(10.0, 5.0, ("20:00", "08:00"))


def test_store_file_refuses_another_time_zone(dataset: Path) -> None:
    connect_store(dataset, V2).close()
    assert not (dataset / STORE_FILE).exists()  # the analyst's tools never write the data dir: the node does
    ensure_store_file(dataset, V2)
    assert json.loads((dataset / STORE_FILE).read_text())["timezone"] == TZ
    with pytest.raises(ConfigError, match="one store in one time zone"):
        connect_store(dataset, StoreSetup("s1", "Europe/Paris", LINES, ZONES, bounce_s=45.0, opening_hours=OPEN))


def test_analytics_file_is_live_and_session_zone_independent(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_analytics(dataset, V2, tmp_path / "a.duckdb")
    monkeypatch.chdir(tmp_path)  # the file names the data relative to its own folder
    q = "SELECT local_date, entries FROM traffic_daily ORDER BY local_date"
    with duckdb.connect(str(db), read_only=True) as c:
        c.execute("SET TimeZone = 'Asia/Tokyo'")
        before = c.execute(q).fetchall()
        assert {v for v in KPI_VIEW_NAMES} <= {r[0] for r in c.execute("SHOW TABLES").fetchall()}
    assert before == [(date(2026, 3, 29), 3), (date(2026, 7, 1), 5), (date(2026, 10, 25), 2)]
    # A node writes a new segment: the existing file sees it without being rebuilt.
    w = SegmentWriter(dataset, "s1", TZ, "ws-1")
    w.write("cam1", bst(7, 2, 9), bst(7, 2, 10), [cross(bst(7, 2, 9, 30), 60, "door", "in")], frames=1, token=1, **V)
    with duckdb.connect(str(db), read_only=True) as c:
        c.execute("SET TimeZone = 'America/Los_Angeles'")
        assert c.execute(q).fetchall()[-2:] == [(date(2026, 7, 2), 1), (date(2026, 10, 25), 2)]


def test_merge_stores_per_store_time_zone(dataset: Path, tmp_path: Path) -> None:
    ensure_store_file(dataset, V2)  # as the node does when it first runs
    ny = tmp_path / "s2"
    setup2 = StoreSetup("s2", "America/New_York", (LineSpec("cam1", "door", "entrance"),), ())
    w = SegmentWriter(ny, "s2", "America/New_York", "ws-1")
    # 03:30 UTC on July 1st is 23:30 on June 30th in New York.
    w.write("cam1", utc(2026, 7, 1, 3), utc(2026, 7, 1, 4), [cross(utc(2026, 7, 1, 3, 30), 1, "door", "in")], frames=1,
            token=1, **V)  # fmt: skip
    ensure_store_file(ny, setup2)
    record_definition(ny, setup2.definition())
    out = tmp_path / "hq"
    assert merge_stores([dataset, ny], out) == ["s1", "s2"]
    assert (out / "merged" / "events" / "store=s2" / "data.parquet").is_file()
    db = open_merged_analytics(out, tmp_path / "hq.duckdb")
    with duckdb.connect(str(db), read_only=True) as c:
        got = c.execute(
            "SELECT store_id, local_date, sum(entries) FROM traffic_daily GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        assert got == [("s1", date(2026, 3, 29), 3), ("s1", date(2026, 7, 1), 5), ("s1", date(2026, 10, 25), 2),
                       ("s2", date(2026, 6, 30), 1)]  # fmt: skip
        assert c.execute("SELECT local_hour, coverage FROM traffic_hourly WHERE store_id = 's2'").fetchall() == [
            (23, 1.0)
        ]
        assert c.execute("SELECT count(*) FROM zone_dwell WHERE store_id = 's1'").fetchall() == [(3,)]


class _Cells(HTMLParser):
    """Collects table cells: {csv name: {(row, col): text}}."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, dict[tuple[int, str], str]] = {}
        self._table: str | None = None
        self._row: int | None = None
        self._col: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("data-csv")
            self.cells.setdefault(self._table, {})  # type: ignore[arg-type]
        elif tag == "tr" and "data-row" in a:
            self._row = int(a["data-row"] or 0)  # type: ignore[assignment]
        elif tag == "td" and "data-col" in a:
            self._col, self._text = a["data-col"], []  # type: ignore[assignment]

    def handle_data(self, data: str) -> None:
        if self._col is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._col is not None:
            self.cells[self._table][(self._row, self._col)] = "".join(self._text)  # type: ignore[index]
            self._col = None


def csv_cells(path: Path) -> dict[tuple[int, str], str]:
    with open(path, newline="") as f:
        return {(i, k): v for i, row in enumerate(csv.DictReader(f)) for k, v in row.items()}


def html_cells(text: str) -> dict[str, dict[tuple[int, str], str]]:
    p = _Cells()
    p.feed(text)
    return p.cells


def test_report_numbers_match_csv_and_page_is_self_contained(dataset: Path, tmp_path: Path) -> None:
    page, csvs = write_report(dataset, V2, date(2026, 7, 1), date(2026, 7, 1), tmp_path / "rep")
    text = page.read_text()
    cells = html_cells(text)
    assert {p.name for p in csvs} == set(cells)
    for p in csvs:
        assert cells[p.name] == csv_cells(p), p.name
    assert csv_cells(tmp_path / "rep" / "daily.csv")[(0, "entries")] == "5"
    assert cells["zone_dwell.csv"][(0, "median_dwell_s")] == "40"
    assert len([k for k in cells["occupancy.csv"] if k[1] == "occupancy"]) == 720
    for forbidden in ("<script", "<link", "src=", "url(", "@import", "@font-face"):
        assert forbidden not in text
    assert text.count('class="chart"') == 4


def test_merging_definition_histories_converges_and_keeps_a_revert(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from storage.analytics import load_definitions, merge_definitions, record_definition
    from storage.kpis import KpiDefinition

    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    a = KpiDefinition(bounce_s=10, visit_merge_s=5, opening_hours=("00:00", "24:00"))
    b = KpiDefinition(bounce_s=20, visit_merge_s=5, opening_hours=("00:00", "24:00"))
    x, y = tmp_path / "x", tmp_path / "y"
    x.mkdir()
    y.mkdir()
    for d, lag in ((x, 0), (y, 30)):  # y ran each config 30 s after x: A, then B, then A again (a revert)
        for i, k in enumerate((a, b, a)):
            record_definition(d, k, effective_from=t0 + timedelta(days=i, seconds=lag))
    assert merge_definitions(y, load_definitions(x)) is True
    assert merge_definitions(x, load_definitions(y)) is False
    got = [(r.version, r.effective_from) for r in load_definitions(y)]
    assert got == [(a.version(), t0), (b.version(), t0 + timedelta(days=1)), (a.version(), t0 + timedelta(days=2))]
    assert (x / "kpi_definitions.jsonl").read_bytes() == (y / "kpi_definitions.jsonl").read_bytes()


def test_report_replaces_links_planted_in_its_folder_never_writes_through_them(dataset: Path, tmp_path: Path) -> None:
    """A shared output folder may hold links planted by someone else: report.html -> a file in the data dir, a CSV ->
    a file elsewhere. The report replaces the links with its files; their targets are never created or written."""
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.html").symlink_to(dataset / "PWNED.html")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (rep / "daily.csv").symlink_to(victim)
    page, csvs = write_report(dataset, V2, date(2026, 7, 1), date(2026, 7, 1), rep)
    assert not (dataset / "PWNED.html").exists() and victim.read_text() == "keep me"
    assert not page.is_symlink() and not (rep / "daily.csv").is_symlink()
    assert csv_cells(rep / "daily.csv")[(0, "entries")] == "5"
    assert sorted(p.name for p in rep.iterdir()) == sorted([p.name for p in csvs] + ["report.html"])  # no temp left
