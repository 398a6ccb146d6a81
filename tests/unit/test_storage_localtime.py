"""Local time in SQL without per-row zone lookups: the same values as AT TIME ZONE, inside and outside its range."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest

from storage.localtime import local_ts_sql, offset_spans

LONDON_2026 = [
    (1767225600, 0),  # 2026-01-01T00:00Z
    (1774746000, 3600),  # 2026-03-29T01:00Z
    (1792890000, 0),  # 2026-10-25T01:00Z
]


def test_offset_spans_find_each_transition_to_the_second() -> None:
    lo, hi = 1767225600, 1798761600  # 2026-01-01 .. 2027-01-01 UTC
    assert offset_spans("Europe/London", lo, hi) == LONDON_2026
    assert offset_spans("Asia/Kolkata", lo, hi) == [(lo, 19800)]
    assert offset_spans("Australia/Lord_Howe", lo, hi) == [(lo, 39600), (1775314800, 37800), (1791041400, 39600)]


@pytest.mark.parametrize("zone", ["Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])
def test_local_ts_sql_equals_at_time_zone(zone: str) -> None:
    con = duckdb.connect()
    con.execute("LOAD icu")
    con.execute("SET TimeZone = 'UTC'")
    lo = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    hi = datetime(2026, 12, 31, tzinfo=UTC).timestamp()
    # every 15 minutes from 2025-12-01 to 2027-02-01 (in and out of the range), plus odd microseconds
    expr = local_ts_sql("t", zone, lo, hi)
    q = f"""
        WITH s AS (SELECT unnest(range(TIMESTAMPTZ '2025-12-01 00:00:00+00', TIMESTAMPTZ '2027-02-01 00:00:00+00',
                                       INTERVAL 15 MINUTE)) + INTERVAL 7 MICROSECOND AS t)
        SELECT count(*), count(*) FILTER (WHERE {expr} IS DISTINCT FROM t AT TIME ZONE '{zone}') FROM s
    """
    assert con.execute(q).fetchall() == [(427 * 96, 0)]
