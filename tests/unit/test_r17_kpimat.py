"""Review r17 (issue 17): materialised KPI days that are damaged, replaced under a long-lived reader, or that miss a
visit dated more than a day before its exit. Tiny datasets (the ``autumn`` fixture of test_kpimat)."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest

from cluster.errors import EdgepairError
from storage.analytics import StoreSession, connect_store, ensure_store_file, open_analytics, record_definition
from storage.kpibuild import refresh_kpis
from storage.kpiexport import export_kpis
from storage.kpimat import read_blocks
from storage.sandbox import KPI_DIR
from storage.segments import SegmentWriter
from tests.unit.test_kpimat import LATER, V, views, write_spans
from tests.unit.test_kpimat import autumn as autumn
from tests.unit.test_kpis import TZ, V1, V2, exit_, utc


def _late_segment(data: Path) -> None:
    """The peer's segment for cam2's gap, replicated late: the month's block is rewritten under a new name."""
    SegmentWriter(data, "s1", TZ, "ws-2").write(
        "cam2", utc(2026, 10, 25, 10), utc(2026, 10, 25, 11), [], frames=1, token=2, **V
    )


def test_r17_a_block_with_a_missing_view_file_is_repaired_by_the_next_refresh(autumn: Path) -> None:
    """A block left out by readers (a view file missing) is rewritten by the node: the new block has the same day
    map, so the same name, and ``_write_block`` keeps the damaged folder (``final.exists()``) and throws the good one
    away. The month is then recomputed on every refresh (every minute) and never read again."""
    first = refresh_kpis(autumn, now=LATER).written
    (autumn / KPI_DIR / first[0] / "visits.parquet").unlink()
    assert read_blocks(autumn, V1) == []  # left out with a warning
    refresh_kpis(autumn, now=LATER, grace_s=0.0)
    assert len(read_blocks(autumn, V1)) == 1, "the damaged block was not replaced by a readable one"
    assert refresh_kpis(autumn, now=LATER, grace_s=0.0).days_computed == 0


def test_r17_a_truncated_block_file_costs_speed_not_every_query(autumn: Path) -> None:
    """README: "a missing or stale block only costs speed". A block whose view file is damaged (a torn copy, a bad
    disk sector) passes ``read_blocks`` (only ``is_file`` is checked) and every query of that view then fails."""
    first = refresh_kpis(autumn, now=LATER).written
    f = autumn / KPI_DIR / first[0] / "traffic_daily.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    raw = views(autumn, V1, materialised=False)[1]
    mat = views(autumn, V1)[1]  # raises a DuckDB error today
    assert mat == raw


def test_r17_the_analysts_duckdb_file_survives_the_nodes_next_block(autumn: Path, tmp_path: Path) -> None:
    """``analytics open``'s file names the block folders of the moment. The node rewrites the current month's block
    every day (a day closes) and deletes the old one ``grace_s`` (600 s) later, so the next day every KPI view of the
    file fails with "No files found" (the events views keep working)."""
    refresh_kpis(autumn, now=LATER)
    db = open_analytics(autumn, V1, tmp_path / "out" / "s1.duckdb")
    _late_segment(autumn)
    assert refresh_kpis(autumn, now=LATER, grace_s=0.0).deleted  # the block the file names is gone
    cwd = Path.cwd()
    try:
        os.chdir(db.parent)
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM events").fetchone()[0] > 0
            con.execute("SELECT count(*) FROM traffic_daily").fetchone()  # IOException: No files found
    finally:
        os.chdir(cwd)


def test_r17_a_long_lived_sql_shell_survives_the_nodes_next_block(autumn: Path) -> None:
    """``edgepair sql`` keeps one connection (``connect_store``) for the whole session: same as the file above."""
    refresh_kpis(autumn, now=LATER)
    con = connect_store(autumn, V1)
    try:
        before = con.execute("SELECT sum(entries) FROM traffic_daily").fetchone()
        _late_segment(autumn)
        assert refresh_kpis(autumn, now=LATER, grace_s=0.0).deleted
        assert con.execute("SELECT sum(entries) FROM traffic_daily").fetchone() == before
    finally:
        con.close()


def test_r17_a_visit_longer_than_a_day_is_dated_the_same_materialised_or_recomputed(autumn: Path) -> None:
    """The zones emit every visit whatever its length (no cap on dwell; a static object in a 24-hour store). A visit
    that entered on D and left after D+1 was dated D, but D's fingerprint covered only D-1..D+1, so the block kept D
    without it while the recomputed view had it. A presence longer than a day is no visit now (storage.kpisql
    MAX_VISIT_S: 10 hours), in both, which keeps what a day's visits depend on within D-1..D+1."""
    assert refresh_kpis(autumn, now=LATER).days_computed == 4
    # Entered 2026-10-25 11:00 UTC (the 25th), left 2026-10-27 05:00 UTC: 42 hours.
    long_visit = exit_(utc(2026, 10, 27, 5), 80, "till", 42 * 3600.0, "cam2")
    SegmentWriter(autumn, "s1", TZ, "ws-1").write(
        "cam2", utc(2026, 10, 27, 4), utc(2026, 10, 27, 6), [long_visit], frames=100, token=1, **V
    )
    raw = views(autumn, V1, materialised=False)[1]
    assert [r for r in raw["visits"] if r[1] == "cam2"] == []  # not a visit
    fresh, mat = views(autumn, V1)
    assert (fresh, mat) == (2, raw)  # the 26th and 27th (within a day of the new piece) computed, the others read
    assert refresh_kpis(autumn, now=LATER).days_computed == 2
    assert views(autumn, V1) == (4, raw)


def test_r17_a_visit_grown_too_long_by_a_late_piece_leaves_its_day_in_both(tmp_path: Path) -> None:
    """Pieces of one track closer than visit_merge_s merge into one visit dated by the first: a track in the till
    zone from the 25th 20:00 UTC to the 26th 04:00 (8 h, pieces 2 s apart) is one visit of the 25th; a piece that
    arrives later (the peer's, replicated after a failover gap) extends it to the 26th 08:00: 12 h, no visit. The
    piece lies on the 26th, within the 25th's fingerprint: the block's 25th is stale and computed again."""
    data = tmp_path / "s1"
    w = SegmentWriter(data, "s1", TZ, "ws-1")
    hour = 3600.0
    pieces = [exit_(utc(2026, 10, 25, 21) + i * hour, 90, "till", hour - 2.0, "cam2") for i in range(8)]
    write_spans(w, "cam2", utc(2026, 10, 24, 0), utc(2026, 10, 26, 4, 30), pieces)
    write_spans(w, "cam2", utc(2026, 10, 26, 8, 30), utc(2026, 10, 29, 0), [])  # a gap on the 26th, 04:30-08:30
    ensure_store_file(data, V2)
    record_definition(data, V1.definition(), effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    assert refresh_kpis(data, now=LATER).days_computed == 6  # the 24th to the 29th (cam2 ends at its midnight)
    raw = views(data, V1, materialised=False)[1]
    visits = [(r[8], r[11], r[10]) for r in raw["visits"] if r[1] == "cam2"]
    assert visits == [(date(2026, 10, 25), 8, 8 * hour - 2.0)]
    assert views(data, V1) == (6, raw)
    late = exit_(utc(2026, 10, 26, 8), 90, "till", 4 * hour - 2.0, "cam2")
    SegmentWriter(data, "s1", TZ, "ws-2").write(
        "cam2", utc(2026, 10, 26, 4, 30), utc(2026, 10, 26, 8, 30), [late], frames=100, token=2, **V
    )
    raw = views(data, V1, materialised=False)[1]
    assert [r for r in raw["visits"] if r[1] == "cam2"] == []  # 12 h: no visit
    fresh, mat = views(data, V1)
    assert (fresh, mat) == (3, raw)  # the 25th, 26th and 27th computed (within a day of the late piece)
    assert refresh_kpis(data, now=LATER).days_computed == 3
    assert views(data, V1) == (6, raw)


def test_r17_export_to_an_existing_file_is_one_line_and_leaves_nothing(autumn: Path, tmp_path: Path) -> None:
    """``analytics export --out FILE``: ``_replace_dir`` calls ``iterdir()`` on the file (NotADirectoryError, a
    traceback from the CLI, which catches EdgepairError only) and the temporary export folder is left beside it."""

    out = tmp_path / "exp"
    out.write_text("not a folder\n")
    with pytest.raises(EdgepairError):
        export_kpis(autumn, V1, date(2026, 10, 24), date(2026, 10, 27), out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".exp")) == []


def test_r17_a_long_lived_sql_shell_sees_the_same_events_after_compaction(autumn: Path) -> None:
    """storage/views.py: "A connection kept open longer than the grace period must call create_views again". Once
    compaction removed its sources, a snapshot's views ignore the compacted file (not in the snapshot, and named
    compacted) and find the sources gone: the events silently vanish. ``edgepair sql``'s session
    (:class:`StoreSession`) notices that a file of its snapshot is gone and builds its views again."""
    from storage.compaction import compact

    query = "SELECT count(*), (SELECT count(*) FROM coverage) FROM events"
    session = StoreSession(autumn, V1)
    try:
        before = session.current().execute(query).fetchone()
        assert before == (7, 142)
        compact(autumn, node="ws-1", now=LATER, grace_s=0.0)
        assert session.current().execute(query).fetchone() == before  # sources still there: same snapshot
        assert session.rebuilds == 0
        assert compact(autumn, node="ws-1", now=LATER, grace_s=0.0).deleted  # the next run deletes the sources
        stale = session.con
        with pytest.raises(duckdb.InvalidInputException, match="build them again"):  # never a silent shortfall
            stale.execute(query).fetchone()
        assert session.current().execute(query).fetchone() == before
        assert session.rebuilds == 1
    finally:
        session.close()


def test_r17_a_forged_block_is_not_trusted(autumn: Path) -> None:
    """Segments are signed and ``edgepair verify`` checks them (README, Security model), but the KPI blocks the views,
    the report and the HQ export now read are not: a block's fingerprint is a plain hash of public facts, nothing
    binds its rows to the signed segments, so whoever can write ``kpi/`` changes every reported number."""
    (name,) = refresh_kpis(autumn, now=LATER).written
    f = autumn / KPI_DIR / name / "traffic_daily.parquet"
    with duckdb.connect() as c:
        c.execute(
            f"COPY (SELECT * REPLACE (entries * 100 AS entries) FROM read_parquet('{f}')) TO '{f}.new' (FORMAT parquet)"
        )
    os.replace(f"{f}.new", f)
    raw = views(autumn, V1, materialised=False)[1]
    mat = views(autumn, V1)[1]
    assert mat["traffic_daily"] == raw["traffic_daily"]


def test_r17_a_block_left_half_written_by_a_crash_is_cleaned_up(autumn: Path) -> None:
    """``_write_block`` removes its ``.tmp-*`` folder on an exception, not when the node is killed meanwhile (a first
    materialisation takes minutes); nothing removes it later: ``_prune`` only sees ``read_blocks``' blocks."""
    leftover = autumn / KPI_DIR / ".tmp-deadbeef0000"
    leftover.mkdir(parents=True)
    (leftover / "coverage.parquet").write_bytes(b"x" * 1000)
    refresh_kpis(autumn, now=LATER, grace_s=0.0)
    refresh_kpis(autumn, now=LATER, grace_s=0.0)
    assert not leftover.exists()


def test_r17_the_analysts_duckdb_file_says_so_once_compaction_removed_its_files(autumn: Path, tmp_path: Path) -> None:
    """The analyst's file is a snapshot of the catalog: files compacted since it was built are taken for duplicates of
    their sources (which it reads); once the node deleted the sources, every view of events would silently lose their
    rows (0 events here). It stops with one line naming the fix instead, and a file built again has every event."""
    from storage.compaction import compact

    def count(db: Path, view: str = "events") -> int:
        cwd = Path.cwd()
        try:
            os.chdir(db.parent)
            with duckdb.connect(str(db), read_only=True) as con:
                return int(con.execute(f"SELECT count(*) FROM {view}").fetchone()[0])
        finally:
            os.chdir(cwd)

    db = open_analytics(autumn, V1, tmp_path / "out" / "s1.duckdb")
    assert count(db) == 7
    compact(autumn, node="ws-1", now=LATER, grace_s=0.0)
    assert count(db) == 7  # the compacted files exist, their sources too: read from the sources
    assert compact(autumn, node="ws-1", now=LATER, grace_s=0.0).deleted
    for view in ("events", "visits", "traffic_daily"):
        with pytest.raises(duckdb.InvalidInputException, match="edgepair analytics open"):
            count(db, view)
    assert count(open_analytics(autumn, V1, tmp_path / "out" / "s1.duckdb")) == 7


def test_edgepair_query_of_the_events_alone_skips_the_kpi_views_and_kpi_names_mean_one_thing(autumn: Path) -> None:
    """``edgepair query`` builds the KPI views only when the statement names one (a query of the events alone would
    pay a second a year for nothing); the simple views of the same names are dropped on that path, so a name never
    means two things."""
    from storage.analytics import _reads_raw_views_only, query_store

    assert query_store(autumn, V1, "SELECT count(*) AS n FROM events").to_pylist() == [{"n": 7}]
    assert _reads_raw_views_only("SELECT count(*) AS n FROM events")
    raw = views(autumn, V1, materialised=False)[1]
    daily = query_store(autumn, V1, "SELECT sum(entries) AS e FROM traffic_daily").to_pylist()
    assert daily == [{"e": sum(r[5] for r in raw["traffic_daily"])}]
    assert not _reads_raw_views_only("SHOW TABLES")
    with pytest.raises(EdgepairError, match="traffic_hourly"):
        query_store(autumn, V1, "SELECT * FROM events, query_table('traffic_hourly')")
