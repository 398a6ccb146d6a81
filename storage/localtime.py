"""Local time in SQL: fast local timestamps, and local hours as 15-minute UTC slots. Pure module (SQL text only).

- :func:`local_ts_sql`: DuckDB's ``ts AT TIME ZONE tz`` asks ICU for every row, which was most of the time of an
  hourly query over a year of events. Between two offset transitions a zone is UTC plus one constant offset, so the
  transitions of a range (read from ``zoneinfo``) become a ``CASE`` on the epoch; outside that range the expression
  falls back to ``AT TIME ZONE``, so it is right for any instant.
- :func:`slots_sql` / :func:`cov_slots_sql`: coverage is computed on 15-minute UTC slots (every real UTC offset is a
  multiple of 15 minutes), each slot keyed by its local date, hour and UTC offset. An autumn DST day has 25 local
  hours (the repeated hour is two rows, told apart by ``utc_offset_s``), a spring one 23, and ``hour_s`` is the real
  length of each local hour. Used by :mod:`storage.views` (``coverage``) and :mod:`storage.kpis` alike.
"""

from __future__ import annotations

import functools
import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

from storage.sqltext import literal as _literal

SLOT_S = 900
"""Coverage is computed on 15-minute UTC slots: every real UTC offset is a multiple of 15 minutes."""
_STEP_S = 6 * 3600
"""Offsets are probed every 6 hours, then bisected to the second: no zone changes its offset twice in 6 hours."""


def offset_spans(timezone: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """``(from_epoch_s, utc_offset_s)`` for every constant-offset span of ``timezone`` in ``[lo, hi)``, sorted."""
    return list(_offset_spans(timezone, lo, hi))


@functools.lru_cache(maxsize=64)
def _offset_spans(timezone: str, lo: int, hi: int) -> tuple[tuple[int, int], ...]:
    """:func:`offset_spans`, cached: the views ask for the same range several times."""
    tz = ZoneInfo(timezone)

    def off(t: int) -> int:
        delta = datetime.fromtimestamp(t, tz).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    spans = [(lo, off(lo))]
    t = lo
    while t < hi:
        n = min(t + _STEP_S, hi)
        if off(n) != spans[-1][1]:
            a, b = t, n
            while b - a > 1:
                m = (a + b) // 2
                a, b = (m, b) if off(m) == spans[-1][1] else (a, m)
            spans.append((b, off(b)))
        t = n
    return tuple(spans)


def local_ts_sql(col: str, timezone: str, lo: float, hi: float) -> str:
    """SQL for the local ``TIMESTAMP`` of the ``TIMESTAMPTZ`` expression ``col`` in ``timezone``.

    Exact: the same value as ``col AT TIME ZONE timezone``, computed by adding the offset in force for instants in
    ``[lo, hi)`` (UTC epoch seconds) and by ``AT TIME ZONE`` outside it.
    """
    lo_s, hi_s = int(lo), int(hi) + 1
    spans = offset_spans(timezone, lo_s, hi_s)
    us = f"epoch_us({col})"
    pairs = itertools.pairwise(spans)
    whens = " ".join(f"WHEN {us} < {nxt * 1_000_000} THEN {o * 1_000_000}" for (_, o), (nxt, _) in pairs)
    offset = f"CASE {whens} ELSE {spans[-1][1] * 1_000_000} END" if whens else str(spans[0][1] * 1_000_000)
    return (
        f"CASE WHEN {us} >= {lo_s * 1_000_000} AND {us} < {hi_s * 1_000_000} THEN make_timestamp({us} + {offset})"
        f" ELSE {col} AT TIME ZONE {_literal(timezone)} END"
    )


def local_cols(t: str, tz: str) -> str:
    """Local columns of the UTC instant ``t`` (TIMESTAMPTZ) in zone column ``tz``; session-zone independent."""
    return f"timezone({tz}, {t}) AS l_ts, CAST(epoch(timezone({tz}, {t})) - epoch({t}) AS INTEGER) AS utc_offset_s"


def _keys(keys: tuple[str, ...]) -> str:
    return "".join(f"{k}, " for k in keys)


def slots_sql(bounds: str, keys: tuple[str, ...]) -> str:
    """Every 15-minute UTC slot of every local day from ``lo`` to ``hi``, per row of ``bounds``.

    ``bounds`` is a SELECT with the columns ``keys``, ``timezone`` (IANA name), ``lo`` and ``hi`` (TIMESTAMPTZ; a row
    with ``lo`` NULL gives nothing). Columns: ``keys``, ``slot`` (UTC epoch s), ``slot_local``, ``local_date``,
    ``local_hour``, ``utc_offset_s``, ``hour_s`` (length of that local hour) and ``hour_start`` (UTC).
    """
    k = _keys(keys)
    return f"""
        WITH d AS (
            SELECT {k}timezone,
                   CAST(timezone(timezone, lo) AS DATE) AS d0, CAST(timezone(timezone, hi) AS DATE) AS d1
            FROM ({bounds}) WHERE lo IS NOT NULL
        ), r AS (
            SELECT {k}timezone, unnest(range(
                CAST(epoch(timezone(timezone, CAST(d0 AS TIMESTAMP))) AS BIGINT),
                CAST(epoch(timezone(timezone, CAST(d1 + 1 AS TIMESTAMP))) AS BIGINT), {SLOT_S})) AS slot
            FROM d
        ), l AS (SELECT {k}slot, {local_cols("to_timestamp(slot)", "timezone")} FROM r)
        , t AS (
            SELECT {k}slot, l_ts AS slot_local, CAST(l_ts AS DATE) AS local_date,
                   CAST(hour(l_ts) AS INTEGER) AS local_hour, utc_offset_s
            FROM l
        )
        SELECT *, count(*) OVER h * {SLOT_S} AS hour_s, to_timestamp(min(slot) OVER h) AS hour_start
        FROM t WINDOW h AS (PARTITION BY {k}local_date, local_hour, utc_offset_s)
    """


def cov_slots_sql(pieces: str, keys: tuple[str, ...]) -> str:
    """Seconds processed per ``keys`` and 15-minute UTC slot, from ``pieces`` (``keys``, ``p_start``, ``p_end``).

    Columns: ``keys``, ``slot`` (UTC epoch s) and ``s`` (seconds, at most a slot: overlapping pieces count once only
    up to the slot's length; pass disjoint pieces for exact seconds).
    """
    k = _keys(keys)
    return f"""
        WITH p AS (
            SELECT {k}epoch(p_start) AS a, epoch(p_end) AS b FROM ({pieces}) WHERE p_end > p_start
        ), s AS (
            SELECT {k}a, b,
                   unnest(range(CAST(floor(a / {SLOT_S}) AS BIGINT) * {SLOT_S},
                                CAST(ceil(b / {SLOT_S}) AS BIGINT) * {SLOT_S}, {SLOT_S})) AS slot
            FROM p
        )
        SELECT {k}slot, least({SLOT_S}, sum(least(b, slot + {SLOT_S}) - greatest(a, slot))) AS s
        FROM s GROUP BY ALL
    """
