"""The SQL of the KPI views (pure: SQL text only). Definitions and their history: :mod:`storage.kpis`.

The views are built on base relations that :mod:`storage.analytics` creates, the same for one store or for a merged
dataset of several stores: ``events`` (credited, exactly once, with ``ts_local``/``local_date``/``local_hour`` in the
store's zone), ``stores`` (store_id, timezone), ``lines``, ``zones``, ``kpi_definitions``, ``kpi_zone_thresholds``
and ``<internal schema>.cov_pieces`` (store_id, camera_id, p_start, p_end: processed time, UTC).

One set of SQL, two uses (:class:`Names`): the public views of :data:`KPI_VIEW_NAMES` over all the events (the
*recomputed* views), and the same views restricted to some local days (``target``), over events pre-filtered to
those days and their neighbours, which :mod:`storage.kpimat` uses to build materialised days and to compute the days
that are not materialised. Every KPI row of a local day D depends only on the events of D-1..D+1, the processed time
of D and the definitions in force on D-1..D+1; a view restricted to a set of days gives exactly the rows of the
recomputed view for those days, provided the slots (the days) exist, which ``extra_bounds`` guarantees.

Why D+1 holds for visits: a visit is dated by its first piece and absorbs the pieces of its track that follow within
``visit_merge_s`` (at most an hour), so without a bound one visit could reach any later day (a static object at a
zone's edge). A zone presence longer than :data:`MAX_VISIT_S` (10 hours: a shift at a till, a static object, a track
stuck in the zone) is not a visit: a piece that long is left out before merging (pieces of the same track
next to it stay visits of their own), and a merged visit that long after.
A visit dated D then ends within 10 hours of D's end, and a piece that would make it too long starts within an hour of
that and ends within 10 hours more: before D+2 starts, even when D+1 is a 23-hour DST day (2 x 10 + 1 < 23).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from storage.localtime import SLOT_S, cov_slots_sql, local_cols, slots_sql

KPI_SCHEMA = "_kpi"
MAX_VISIT_S = 36000.0
"""A zone presence longer than this (10 hours) is not a visit (module rules: it keeps a day's rows within D-1..D+1;
derived from that bound, not tuned on data)."""
DAYS_AFTER = 1
"""The rows of a local day D depend on the events up to the end of D+DAYS_AFTER (module rules)."""

KPI_VIEW_NAMES = (
    "coverage",
    "coverage_daily",
    "visits",
    "traffic_hourly",
    "traffic_daily",
    "occupancy",
    "zone_dwell",
    "capture_rate",
    "bounce_rate",
    "peak_hours",
)


@dataclass(frozen=True)
class Names:
    """Where one set of KPI views lives and what it reads.

    ``k``: the schema of the internal helpers (and of ``cov_pieces``); ``p``: the prefix of the public views (``""``
    for the main schema, ``"<schema>."`` otherwise); ``events``: the relation of credited events; ``target``: a
    predicate on ``store_id``/``local_date``, or None for every day; ``extra_bounds``: SQL appended to the union
    that gives each store's first and last instant (``UNION ALL SELECT store_id, lo, hi FROM ...``).
    """

    k: str = KPI_SCHEMA
    p: str = ""
    events: str = "events"
    target: str | None = None
    extra_bounds: str = ""
    ranges: tuple[tuple[str | None, str | None], ...] = ()
    """With ``target``: the UTC ranges (TIMESTAMPTZ SQL, None: open) that hold the target days, disjoint: the
    slots (local days) are generated only there, within each store's first and last instant."""
    slot_events: str | None = None
    """The events of the views built on the slots (the bounds, the line crossings); None: ``events``. Only the
    visits (dated by their entry, which can precede every processed instant) read ``events`` then."""


# --- SQL -----------------------------------------------------------------------------------------------------------

_DEF_JOIN = (
    "JOIN kpi_definitions k ON k.store_id = {a}.store_id AND {a}.local_date >= k.valid_from"
    " AND (k.valid_to IS NULL OR {a}.local_date < k.valid_to)"
)


def _ranges_sql(bounds: str, ranges: tuple[tuple[str | None, str | None], ...]) -> str:
    """``bounds`` (store_id, lo, hi) cut to each of ``ranges`` (one row per store and range), or as it is."""
    if not ranges:
        return bounds
    rows = ", ".join(f"(CAST({a or 'NULL'} AS TIMESTAMPTZ), CAST({b or 'NULL'} AS TIMESTAMPTZ))" for a, b in ranges)
    return f"""
        WITH g AS ({bounds}), r(r_lo, r_hi) AS (VALUES {rows})
        SELECT store_id, greatest(lo, coalesce(r_lo, lo)) AS lo, least(hi, coalesce(r_hi, hi)) AS hi FROM g, r
        WHERE greatest(lo, coalesce(r_lo, lo)) <= least(hi, coalesce(r_hi, hi))
    """


def _views_sql(n: Names) -> list[tuple[str, str]]:
    """(name, SELECT) of every KPI view, in creation order (see :class:`Names`)."""
    k, p, ev, sev = n.k, n.p, n.events, n.slot_events or n.events
    d_join_e = _DEF_JOIN.format(a="x")
    return [
        (
            f"{k}.bounds",
            _ranges_sql(
                f"""
                SELECT store_id, min(lo) AS lo, max(hi) AS hi FROM (
                    SELECT store_id, min(ts) AS lo, max(ts) AS hi FROM {sev} GROUP BY ALL
                    UNION ALL SELECT store_id, min(p_start), max(p_end) FROM {k}.cov_pieces GROUP BY ALL{n.extra_bounds}
                ) GROUP BY ALL
                """,
                n.ranges,
            ),
        ),
        (
            # Every 15-minute UTC slot of every local day between the first and the last datum of each store.
            f"{k}.slots",
            "SELECT * FROM ("
            + slots_sql(
                f"SELECT b.store_id, s.timezone, b.lo, b.hi FROM {k}.bounds b JOIN stores s USING (store_id)",
                ("store_id",),
            )
            + f") WHERE {n.target or 'true'}",
        ),
        (
            f"{k}.hours",
            f"""
            SELECT store_id, local_date, local_hour, utc_offset_s, to_timestamp(min(slot)) AS hour_start,
                   count(*) * {SLOT_S} AS hour_s
            FROM {k}.slots GROUP BY ALL
            """,
        ),
        (
            f"{k}.days",
            f"""
            SELECT store_id, local_date, count(*) AS hours, CAST(sum(hour_s) AS BIGINT) AS day_s
            FROM {k}.hours GROUP BY ALL
            """,
        ),
        (
            f"{k}.cov_slots",
            cov_slots_sql(f"SELECT store_id, camera_id, p_start, p_end FROM {k}.cov_pieces", ("store_id", "camera_id")),
        ),
        (
            f"{p}coverage",
            f"""
            SELECT c.store_id, c.camera_id, t.local_date, t.local_hour, t.utc_offset_s, t.hour_start,
                   sum(c.s) AS seconds_covered, t.hour_s, least(1.0, sum(c.s) / t.hour_s) AS share
            FROM {k}.cov_slots c
            JOIN {k}.slots t USING (store_id, slot)
            GROUP BY c.store_id, c.camera_id, t.local_date, t.local_hour, t.utc_offset_s, t.hour_start, t.hour_s
            """,
        ),
        (
            f"{p}coverage_daily",
            f"""
            SELECT c.store_id, c.camera_id, c.local_date, d.hours, d.day_s,
                   sum(c.seconds_covered) AS seconds_covered, least(1.0, sum(c.seconds_covered) / d.day_s) AS share
            FROM {p}coverage c JOIN {k}.days d USING (store_id, local_date)
            GROUP BY c.store_id, c.camera_id, c.local_date, d.hours, d.day_s
            """,
        ),
        (
            f"{p}visits",
            f"""
            WITH raw AS (
                SELECT e.store_id, e.camera_id, e.zone_id, e.track_id, e.ts AS exit_ts,
                       e.ts - to_microseconds(CAST(round(e.dwell_s * 1000000) AS BIGINT)) AS enter_ts
                FROM {ev} e WHERE e.kind = 'zone_exit' AND e.dwell_s IS NOT NULL AND e.dwell_s <= {MAX_VISIT_S!r}
            ), x AS (
                SELECT r.*, timezone(s.timezone, r.enter_ts) AS enter_local,
                       timezone(s.timezone, r.exit_ts) AS exit_local,
                       CAST(timezone(s.timezone, r.enter_ts) AS DATE) AS local_date
                FROM raw r JOIN stores s USING (store_id)
            ), g AS (
                SELECT x.*, k.version, CASE WHEN (epoch_us(x.enter_ts) - epoch_us(lag(x.exit_ts) OVER w)) / 1e6
                                              < k.visit_merge_s THEN 0 ELSE 1 END AS starts
                FROM x {d_join_e}
                WINDOW w AS (PARTITION BY x.store_id, x.camera_id, x.zone_id, x.track_id ORDER BY x.enter_ts, x.exit_ts)
            ), i AS (
                SELECT *, sum(starts) OVER (PARTITION BY store_id, camera_id, zone_id, track_id
                                            ORDER BY enter_ts, exit_ts ROWS UNBOUNDED PRECEDING) AS n
                FROM g
            ), v AS (
                SELECT store_id, camera_id, zone_id, track_id, min(enter_ts) AS enter_ts, max(exit_ts) AS exit_ts,
                       arg_min(enter_local, enter_ts) AS enter_local, arg_max(exit_local, exit_ts) AS exit_local,
                       arg_min(local_date, enter_ts) AS local_date, arg_min(version, enter_ts) AS kpi_version,
                       count(*) AS pieces
                FROM i GROUP BY store_id, camera_id, zone_id, track_id, n
            )
            SELECT v.store_id, v.camera_id, v.zone_id, v.track_id, v.enter_ts, v.exit_ts, v.enter_local, v.exit_local,
                   v.local_date, CAST(hour(v.enter_local) AS INTEGER) AS local_hour,
                   (epoch_us(v.exit_ts) - epoch_us(v.enter_ts)) / 1e6 AS dwell_s, v.pieces,
                   coalesce(t.min_dwell_s, 0.0) AS min_dwell_s, k.bounce_s,
                   (epoch_us(v.exit_ts) - epoch_us(v.enter_ts)) / 1e6 >= coalesce(t.min_dwell_s, 0.0) AS counted,
                   (epoch_us(v.exit_ts) - epoch_us(v.enter_ts)) / 1e6 >= coalesce(t.min_dwell_s, 0.0)
                       AND (epoch_us(v.exit_ts) - epoch_us(v.enter_ts)) / 1e6 < k.bounce_s AS bounce,
                   v.kpi_version
            FROM v
            JOIN kpi_definitions k ON k.store_id = v.store_id AND k.version = v.kpi_version
            LEFT JOIN kpi_zone_thresholds t ON t.store_id = v.store_id AND t.version = v.kpi_version
                 AND t.camera_id = v.camera_id AND t.zone_id = v.zone_id
            WHERE (epoch_us(v.exit_ts) - epoch_us(v.enter_ts)) / 1e6 <= {MAX_VISIT_S!r}
            """,
        ),
        (
            f"{k}.crossings",
            f"""
            SELECT e.store_id, e.camera_id, e.line_id, l.kind AS line_kind, e.ts, e.direction, e.local_date,
                   e.local_hour, CAST(epoch(e.ts_local) - epoch(e.ts) AS INTEGER) AS utc_offset_s
            FROM {sev} e JOIN lines l USING (store_id, camera_id, line_id)
            WHERE e.kind = 'line_cross'
            """,
        ),
        (
            f"{p}traffic_hourly",
            f"""
            WITH c AS (
                SELECT store_id, camera_id, line_id, local_date, local_hour, utc_offset_s,
                       count(*) FILTER (WHERE direction = 'in') AS entries,
                       count(*) FILTER (WHERE direction = 'out') AS exits
                FROM {k}.crossings WHERE line_kind = 'entrance' GROUP BY ALL
            ), h AS (
                SELECT l.store_id, l.camera_id, l.line_id, v.local_date, v.local_hour, v.utc_offset_s
                FROM lines l JOIN {p}coverage v USING (store_id, camera_id) WHERE l.kind = 'entrance'
            ), x AS (
                SELECT * FROM c
                FULL OUTER JOIN h USING (store_id, camera_id, line_id, local_date, local_hour, utc_offset_s)
            )
            SELECT x.store_id, x.camera_id, x.line_id, x.local_date, x.local_hour, x.utc_offset_s, hr.hour_start,
                   coalesce(x.entries, 0) AS entries, coalesce(x.exits, 0) AS exits,
                   coalesce(v.share, 0.0) AS coverage, k.version AS kpi_version
            FROM x
            LEFT JOIN {p}coverage v USING (store_id, camera_id, local_date, local_hour, utc_offset_s)
            LEFT JOIN {k}.hours hr USING (store_id, local_date, local_hour, utc_offset_s)
            {d_join_e}
            """,
        ),
        (
            f"{p}traffic_daily",
            f"""
            WITH t AS (
                SELECT store_id, camera_id, line_id, local_date, sum(entries) AS entries, sum(exits) AS exits,
                       kpi_version
                FROM {p}traffic_hourly GROUP BY ALL
            )
            SELECT t.store_id, t.camera_id, t.line_id, t.local_date, d.hours, CAST(t.entries AS BIGINT) AS entries,
                   CAST(t.exits AS BIGINT) AS exits, coalesce(c.share, 0.0) AS coverage, t.kpi_version
            FROM t LEFT JOIN {k}.days d USING (store_id, local_date)
            LEFT JOIN {p}coverage_daily c USING (store_id, camera_id, local_date)
            """,
        ),
        (
            f"{p}occupancy",
            f"""
            WITH b AS (SELECT store_id, min(slot) AS lo, max(slot) AS hi FROM {k}.slots GROUP BY store_id, local_date),
            m AS (
                SELECT b.store_id, st.timezone, unnest(range(b.lo, b.hi + {SLOT_S}, 60)) AS m
                FROM b JOIN stores st USING (store_id)
            ), x AS (
                SELECT m.store_id, m.m, {local_cols("to_timestamp(m.m)", "m.timezone")}, CAST(timezone(m.timezone,
                       to_timestamp(m.m)) AS DATE) AS local_date FROM m
            ), o AS (
                SELECT x.*, k.version FROM x {d_join_e}
                WHERE hour(x.l_ts) * 3600 + minute(x.l_ts) * 60 >= k.open_s
                  AND hour(x.l_ts) * 3600 + minute(x.l_ts) * 60 < k.close_s
            ), c AS (
                SELECT store_id, CAST(floor(epoch(ts) / 60) AS BIGINT) * 60 AS m,
                       count(*) FILTER (WHERE direction = 'in') AS ins,
                       count(*) FILTER (WHERE direction = 'out') AS outs
                FROM {k}.crossings WHERE line_kind = 'entrance' GROUP BY ALL
            ), ne AS (
                SELECT store_id, count(DISTINCT camera_id) AS n FROM lines WHERE kind = 'entrance' GROUP BY ALL
            ), ec AS (
                SELECT v.store_id, v.local_date, v.local_hour, v.utc_offset_s, sum(v.share) AS share_sum
                FROM {p}coverage v JOIN (SELECT DISTINCT store_id, camera_id FROM lines WHERE kind = 'entrance') USING
                     (store_id, camera_id)
                GROUP BY ALL
            ), j AS (
                SELECT o.*, coalesce(c.ins, 0) AS ins, coalesce(c.outs, 0) AS outs,
                       sum(coalesce(c.ins, 0) - coalesce(c.outs, 0)) OVER w AS net
                FROM o LEFT JOIN c USING (store_id, m)
                WINDOW w AS (PARTITION BY o.store_id, o.local_date ORDER BY o.m ROWS UNBOUNDED PRECEDING)
            )
            SELECT j.store_id, j.local_date, CAST(hour(j.l_ts) AS INTEGER) AS local_hour,
                   strftime(j.l_ts, '%H:%M') AS local_time, j.utc_offset_s, to_timestamp(j.m) AS minute_start,
                   j.ins, j.outs,
                   CAST(j.net - least(0, min(j.net) OVER (PARTITION BY j.store_id, j.local_date ORDER BY j.m
                                                         ROWS UNBOUNDED PRECEDING)) AS BIGINT) AS occupancy,
                   coalesce(ec.share_sum / ne.n, 0.0) AS coverage,
                   j.version AS kpi_version
            FROM j LEFT JOIN ec ON ec.store_id = j.store_id AND ec.local_date = j.local_date
                 AND ec.local_hour = hour(j.l_ts) AND ec.utc_offset_s = j.utc_offset_s
            LEFT JOIN ne ON ne.store_id = j.store_id
            """,
        ),
        (
            f"{p}zone_dwell",
            f"""
            SELECT v.store_id, v.camera_id, v.zone_id, v.local_date, count(*) AS visits, avg(v.dwell_s) AS mean_dwell_s,
                   median(v.dwell_s) AS median_dwell_s, quantile_cont(v.dwell_s, 0.9) AS p90_dwell_s,
                   coalesce(any_value(c.share), 0.0) AS coverage, v.kpi_version
            FROM {p}visits v LEFT JOIN {p}coverage_daily c USING (store_id, camera_id, local_date)
            WHERE v.counted
            GROUP BY v.store_id, v.camera_id, v.zone_id, v.local_date, v.kpi_version
            """,
        ),
        (
            f"{p}bounce_rate",
            f"""
            SELECT v.store_id, v.camera_id, v.zone_id, v.local_date, count(*) AS visits,
                   count(*) FILTER (WHERE v.bounce) AS bounces,
                   count(*) FILTER (WHERE v.bounce) / count(*) AS bounce_rate, any_value(v.bounce_s) AS bounce_s,
                   coalesce(any_value(c.share), 0.0) AS coverage, v.kpi_version
            FROM {p}visits v LEFT JOIN {p}coverage_daily c USING (store_id, camera_id, local_date)
            WHERE v.counted
            GROUP BY v.store_id, v.camera_id, v.zone_id, v.local_date, v.kpi_version
            """,
        ),
        (
            f"{p}capture_rate",
            f"""
            WITH c AS (
                SELECT store_id, local_date,
                       count(*) FILTER (WHERE line_kind = 'entrance' AND direction = 'in') AS entries,
                       count(*) FILTER (WHERE line_kind = 'pass_by') AS passers_by
                FROM {k}.crossings GROUP BY ALL
            ), cams AS (SELECT DISTINCT store_id, camera_id FROM lines WHERE kind IN ('entrance', 'pass_by')),
            cov AS (
                SELECT cams.store_id, d.local_date, sum(coalesce(cd.share, 0.0)) / count(*) AS share
                FROM cams JOIN {k}.days d USING (store_id)
                LEFT JOIN {p}coverage_daily cd USING (store_id, camera_id, local_date)
                GROUP BY ALL
            ), x AS (
                SELECT d.store_id, d.local_date FROM {k}.days d
                WHERE d.store_id IN (SELECT store_id FROM lines WHERE kind = 'pass_by')
            )
            SELECT x.store_id, x.local_date, coalesce(c.entries, 0) AS entries, coalesce(c.passers_by, 0) AS passers_by,
                   coalesce(c.entries, 0) / nullif(coalesce(c.entries, 0) + coalesce(c.passers_by, 0), 0)
                       AS capture_rate,
                   coalesce(cov.share, 0.0) AS coverage, k.version AS kpi_version
            FROM x LEFT JOIN c USING (store_id, local_date) LEFT JOIN cov USING (store_id, local_date)
            {d_join_e}
            """,
        ),
        (
            f"{p}peak_hours",
            f"""
            WITH h AS (
                SELECT store_id, local_date, local_hour, utc_offset_s, any_value(hour_start) AS hour_start,
                       CAST(sum(entries) AS BIGINT) AS entries, avg(coverage) AS coverage, kpi_version
                FROM {p}traffic_hourly GROUP BY store_id, local_date, local_hour, utc_offset_s, kpi_version
            )
            SELECT store_id, local_date, local_hour, utc_offset_s, hour_start, entries,
                   CAST(rank() OVER (PARTITION BY store_id, local_date ORDER BY entries DESC) AS INTEGER) AS rank,
                   coverage, kpi_version
            FROM h
            """,
        ),
    ]


def sql_digest() -> str:
    """A hash of the SQL of every KPI view (and of the constants in it, :data:`MAX_VISIT_S`): part of every
    materialised day's fingerprint, so a change of the SQL makes every materialised day stale by itself."""
    import hashlib

    text = "\n".join(f"{name}\n{sql}" for name, sql in _views_sql(Names()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def create_kpi_views(con: duckdb.DuckDBPyConnection, names: Names | None = None) -> None:
    """(Re)create the KPI views of :data:`KPI_VIEW_NAMES` (and their internal helpers) on ``con``.

    The base relations named in the module docstring must exist. With ``names.target``, each public view keeps only
    the rows of the target days.
    """
    n = names or Names()
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {n.k}")
    public = {f"{n.p}{v}" for v in KPI_VIEW_NAMES}
    for name, select in _views_sql(n):
        if n.target and name in public:
            select = f"SELECT * FROM ({select}) WHERE {n.target}"
        try:
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")
        except duckdb.Error as exc:
            raise type(exc)(f"KPI view {name}: {exc}") from exc
