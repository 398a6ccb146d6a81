"""Review r17 (issue 17): materialised equals recomputed in America/Santiago, whose DST changes happen at local
midnight (2026-04-05 00:00 -03 goes back to 04-04 23:00 -04; 2026-09-06 00:00 -04 jumps to 01:00 -03), with events
and visits around those midnights. Tiny dataset: two cameras, a few days each side."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.analytics import ensure_store_file, record_definition
from storage.kpibuild import refresh_kpis
from storage.kpis import LineSpec, StoreSetup, ZoneSpec
from storage.segments import SegmentWriter
from tests.unit.test_kpimat import LATER, V, views, write_spans
from tests.unit.test_kpis import cross, exit_, utc

TZ = "America/Santiago"
SCL = StoreSetup(
    "scl",
    TZ,
    (LineSpec("cam1", "door", "entrance"), LineSpec("cam1", "street", "pass_by")),
    (ZoneSpec("cam1", "shelf", 0.0),),
    opening_hours=("00:00", "24:00"),
)


@pytest.fixture
def santiago(tmp_path: Path) -> Path:
    data = tmp_path / "scl"
    w = SegmentWriter(data, "scl", TZ, "ws-1")
    events = []
    for day in (3, 4, 5):  # around 2026-04-05 04:00 UTC (local midnight, after the repeated hour)
        for h in (2, 3, 4, 5):
            events += [
                cross(utc(2026, 4, day, h, 30), h, "door", "in"),
                cross(utc(2026, 4, day, h, 40), h, "street", "in"),
            ]
            events.append(exit_(utc(2026, 4, day, h, 0, 20), 100 + h, "shelf", 60.0))
    for day in (5, 6, 7):  # around 2026-09-06 04:00 UTC (local midnight that does not exist: 01:00 -03)
        for h in (2, 3, 4, 5):
            events += [
                cross(utc(2026, 9, day, h, 30), h, "door", "in"),
                cross(utc(2026, 9, day, h, 40), h, "door", "out"),
            ]
            events.append(exit_(utc(2026, 9, day, h, 0, 20), 200 + h, "shelf", 60.0))
    write_spans(w, "cam1", utc(2026, 4, 2, 12), utc(2026, 4, 7, 12), events)
    write_spans(w, "cam1", utc(2026, 9, 4, 12), utc(2026, 9, 9, 12), events)
    ensure_store_file(data, SCL)
    record_definition(data, SCL.definition(), effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    return data


def test_r17_santiago_midnight_dst_days_materialised_equal_recomputed(santiago: Path) -> None:
    raw = views(santiago, SCL, materialised=False)[1]
    report = refresh_kpis(santiago, now=LATER, max_months=12)
    assert report.days_computed > 0
    fresh, mat = views(santiago, SCL)
    assert fresh == report.days_computed
    for name in raw:
        assert mat[name] == raw[name], name
    hours = {r[3]: r[4] for r in raw["traffic_daily"]}
    assert hours[datetime(2026, 4, 4).date()] == 25 and hours[datetime(2026, 9, 6).date()] == 23


def test_r17_santiago_live_days_around_dst_midnights_equal_recomputed(santiago: Path) -> None:
    """The live part cut at the DST midnights: a new definition from 2026-09-06 (a day that starts at 01:00) and a
    late segment on 2026-04-04 (the 25-hour day) make those days stale; the rest are read from the blocks."""
    refresh_kpis(santiago, now=LATER, max_months=12)
    new = StoreSetup("scl", TZ, SCL.lines, SCL.zones, bounce_s=90.0, opening_hours=("00:00", "24:00"))
    record_definition(santiago, new.definition(), effective_from=datetime(2026, 9, 6, 4, tzinfo=UTC))
    late = [cross(utc(2026, 4, 5, 3, 30), 900, "door", "in"), exit_(utc(2026, 4, 5, 3, 59, 50), 901, "shelf", 30.0)]
    SegmentWriter(santiago, "scl", TZ, "ws-2").write(
        "cam1", utc(2026, 4, 5, 3), utc(2026, 4, 5, 4, 30), late, frames=100, token=2, **V
    )
    raw = views(santiago, new, materialised=False)[1]
    fresh, mat = views(santiago, new)
    assert fresh > 0
    for name in raw:
        assert mat[name] == raw[name], name
