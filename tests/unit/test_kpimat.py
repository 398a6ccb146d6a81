"""Materialised KPI days equal the recomputed views, row for row: on the KPI test dataset (DST days, two producers,
a definition change), after a new definition, after a late segment replicated into a failover gap, and after
compaction (which changes no fingerprint). Real DuckDB and real segment files; the node's refresh is called directly.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest

from actors.events import Event
from storage.analytics import _connect, build_store_views, connect_store, ensure_store_file, record_definition
from storage.compaction import compact
from storage.kpibuild import refresh_kpis
from storage.kpimat import read_blocks
from storage.kpis import KPI_VIEW_NAMES, StoreSetup
from storage.sandbox import KPI_DIR
from storage.segments import SegmentWriter
from tests.unit.test_kpis import AUTUMN, LINES, OPEN, TZ, V1, V2, ZONES, V, cross, exit_, utc
from tests.unit.test_kpis import dataset as dataset

LATER = datetime(2100, 1, 1, tzinfo=UTC).timestamp()  # every day of the datasets is closed
V3 = StoreSetup("s1", TZ, LINES, ZONES, bounce_s=30.0, visit_merge_s=5.0, opening_hours=OPEN)


def view_rows(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {v: sorted(con.execute(f"SELECT * FROM {v}").fetchall(), key=repr) for v in KPI_VIEW_NAMES}


def views(data: Path, setup: StoreSetup, *, materialised: bool = True, rows: bool = True) -> tuple[int, dict]:
    """(materialised days read, every KPI view's rows) over ``data``; ``rows=False``: only the first."""
    con = _connect(":memory:")
    try:
        fresh = build_store_views(con, data, setup, materialised=materialised)
        return fresh, view_rows(con) if rows else {}
    finally:
        con.close()


def test_materialised_days_equal_recomputed_views(dataset: Path) -> None:
    ensure_store_file(dataset, V2)  # as the node does when it first runs
    assert views(dataset, V2, rows=False)[0] == 0  # nothing materialised yet: the views are the recomputed ones
    report = refresh_kpis(dataset, now=LATER, max_months=12)
    # 2026-03-29 .. 2026-10-26 (the last segment ends at midnight GMT), one block per month
    assert (report.days_computed, report.days_copied, len(report.written)) == (212, 0, 8)
    fresh, mat = views(dataset, V2)
    raw = views(dataset, V2, materialised=False)[1]
    assert fresh == 212
    assert mat == raw
    assert len(raw["occupancy"]) == 212 * 12 * 60 and len(raw["traffic_hourly"]) == 72
    assert refresh_kpis(dataset, now=LATER, max_months=12).written == []  # nothing changed: nothing written
    # The locked connection of the report and `edgepair sql` reads the blocks too.
    with connect_store(dataset, V2) as con:
        assert con.execute("SELECT sum(entries) FROM traffic_daily").fetchone() == (10,)


def write_spans(w: SegmentWriter, cam: str, start: float, end: float, events: list[Event]) -> None:
    """Segments of up to 6 hours covering [start, end), each with the events in its window (few files: fast)."""
    t = start
    while t < end:
        u = min(t + 6 * 3600.0, end)
        w.write(cam, t, u, [e for e in events if t <= e.ts < u], frames=100, token=1, **V)
        t = u


@pytest.fixture
def autumn(tmp_path: Path) -> Path:
    """Four days around the autumn DST change, two cameras; cam2 has a gap on the 25th from 10:00 to 12:00 UTC."""
    data = tmp_path / "s1"
    w = SegmentWriter(data, "s1", TZ, "ws-1")
    events = [
        *AUTUMN, cross(utc(2026, 10, 24, 9), 7, "door", "in"), cross(utc(2026, 10, 26, 9), 8, "door", "in"),
        exit_(utc(2026, 10, 25, 23, 59, 58), 9, "shelf", 20.0),  # a visit just before midnight ...
        exit_(utc(2026, 10, 26, 0, 0, 10), 9, "shelf", 10.0),  # ... and its piece after it: one visit of 32 s
    ]  # fmt: skip
    write_spans(w, "cam1", utc(2026, 10, 23, 23), utc(2026, 10, 26, 23), events)
    write_spans(w, "cam2", utc(2026, 10, 24, 0), utc(2026, 10, 25, 10), [])
    write_spans(w, "cam2", utc(2026, 10, 25, 12), utc(2026, 10, 27, 0), [])
    ensure_store_file(data, V2)
    record_definition(data, V1.definition(), effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    return data


def test_a_new_definition_and_a_late_segment_make_exactly_their_days_stale(autumn: Path) -> None:
    # 10-24 (cam1 starts at 23:00 UTC = 00:00 BST) .. 10-27 (cam2 ends at 00:00 GMT, which makes it a day of data)
    assert refresh_kpis(autumn, now=LATER).days_computed == 4
    fresh, mat = views(autumn, V1)
    raw = views(autumn, V1, materialised=False)[1]
    assert (fresh, mat == raw) == (4, True)
    assert [(r[2], r[3], r[5]) for r in raw["coverage_daily"] if r[1] == "cam2"] == [
        (date(2026, 10, 24), 24, 82800.0), (date(2026, 10, 25), 25, 82800.0), (date(2026, 10, 26), 24, 86400.0)
    ]  # fmt: skip
    assert [(r[3], r[4], r[5]) for r in raw["zone_dwell"]] == [(date(2026, 10, 25), 1, 32.0)]
    # V3 from local midnight of the 26th: the 25th (its neighbour), 26th and 27th are stale, the 24th is not.
    record_definition(autumn, V3.definition(), effective_from=datetime(2026, 10, 26, 0, tzinfo=UTC))
    assert views(autumn, V3, rows=False)[0] == 1
    # The peer's segment of cam2 for the gap arrives late (replicated after the failover), with a visit: the 24th
    # (the 25th's neighbour) is stale too.
    SegmentWriter(autumn, "s1", TZ, "ws-2").write(
        "cam2", utc(2026, 10, 25, 10), utc(2026, 10, 25, 12), [exit_(utc(2026, 10, 25, 11), 70, "till", 12.0, "cam2")],
        frames=100, token=2, **V,
    )  # fmt: skip
    fresh, mat = views(autumn, V3)
    raw = views(autumn, V3, materialised=False)[1]
    assert (fresh, mat == raw) == (0, True)
    assert [r[5] for r in raw["coverage_daily"] if r[1] == "cam2" and r[2] == date(2026, 10, 25)] == [90000.0]
    assert [(r[2], r[4], r[-1]) for r in raw["zone_dwell"]] == [
        ("shelf", 1, V1.definition().version()), ("till", 1, V1.definition().version())
    ]  # fmt: skip
    assert {r[3]: r[-1] for r in raw["traffic_daily"]}[date(2026, 10, 26)] == V3.definition().version()
    report = refresh_kpis(autumn, now=LATER)
    assert (report.days_computed, report.days_copied) == (4, 0)
    fresh, mat = views(autumn, V3)
    assert (fresh, mat == raw) == (4, True)


def test_live_days_before_between_and_after_the_fresh_ones_equal_the_recomputed_views(autumn: Path) -> None:
    """The live part with the first day fresh and with the first days stale. A visit that entered before the first
    processed instant (a day of no processing) is dated that day: the views built on the slots have no such day."""
    before = exit_(utc(2026, 10, 23, 23, 0, 30), 72, "till", 60.0, "cam2")  # entered 23:59:30 BST on the 23rd
    SegmentWriter(autumn, "s1", TZ, "ws-1").write(
        "cam2", utc(2026, 10, 23, 23), utc(2026, 10, 24, 0), [before], frames=100, token=1, **V
    )
    assert refresh_kpis(autumn, now=LATER).days_computed == 4
    # V3 from local midnight of the 26th: the 24th (the first day) stays fresh, the 25th..27th are computed.
    record_definition(autumn, V3.definition(), effective_from=datetime(2026, 10, 26, 0, tzinfo=UTC))
    fresh, mat = views(autumn, V3)
    assert (fresh, mat == views(autumn, V3, materialised=False)[1]) == (1, True)
    assert refresh_kpis(autumn, now=LATER).days_computed == 3
    # A late segment of cam2 on the 24th (token 2 outranks ws-1 there): the 24th and the 25th are stale, the 26th
    # and the 27th fresh, so the days before the first fresh one are computed, with their neighbour.
    SegmentWriter(autumn, "s1", TZ, "ws-2").write(
        "cam2", utc(2026, 10, 24, 5), utc(2026, 10, 24, 6), [exit_(utc(2026, 10, 24, 5, 30), 71, "till", 12.0, "cam2")],
        frames=100, token=2, **V,
    )  # fmt: skip
    fresh, mat = views(autumn, V3)
    raw = views(autumn, V3, materialised=False)[1]
    assert (fresh, mat == raw) == (2, True)
    assert [(r[3], r[4]) for r in raw["zone_dwell"] if r[1] == "cam2"] == [
        (date(2026, 10, 23), 1),
        (date(2026, 10, 24), 1),
    ]


def test_compaction_changes_no_fingerprint_and_old_blocks_are_pruned(autumn: Path) -> None:
    first = refresh_kpis(autumn, now=LATER).written
    rep = compact(autumn, node="ws-1", now=LATER, grace_s=0.0)
    assert sum("month~" in cid for cid in rep.written) == 2  # hours, then days, then one month file per camera
    assert refresh_kpis(autumn, now=LATER).written == []
    assert [b.path.name for b in read_blocks(autumn, V1)] == first
    # Late data: a new block replaces the old one, which is deleted once the grace period is over.
    SegmentWriter(autumn, "s1", TZ, "ws-2").write("cam2", utc(2026, 10, 25, 10), utc(2026, 10, 25, 11), [],
                                                 frames=1, token=2, **V)  # fmt: skip
    second = refresh_kpis(autumn, now=LATER, grace_s=0.0)
    assert second.deleted == first and second.written != first
    assert sorted(p.name for p in (autumn / KPI_DIR).iterdir()) == second.written
    # A block someone damaged is left out with a warning; its days are computed from the events.
    (autumn / KPI_DIR / second.written[0] / "visits.parquet").unlink()
    fresh, mat = views(autumn, V1)
    assert (fresh, mat == views(autumn, V1, materialised=False)[1]) == (0, True)
    # Blocks of another store (a data dir copied over) are never read.
    assert read_blocks(autumn, StoreSetup("s2", TZ, LINES, ZONES, opening_hours=OPEN)) == []
