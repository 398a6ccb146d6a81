"""The store report: one self-contained HTML file (inline SVG charts, no script, font or image from anywhere) and
the same numbers as CSV files beside it.

Every number shown is a table cell ``<td data-col="...">`` in a row ``<tr data-row="i">`` of a table
``<table data-csv="name.csv">``, written with the same text as row ``i`` of that CSV, so a test (or an auditor) can
match the page with the files. The charts draw those same tables.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from storage.analytics import connect_store, outside_data_dir
from storage.kpimat import BlockTrust
from storage.kpis import StoreSetup

log = logging.getLogger(__name__)

W, H = 900, 240
PAD_L, PAD_R, PAD_T, PAD_B = 50, 10, 20, 40
COLORS = {"traffic": "#1f77b4", "occupancy": "#d62728", "median": "#2ca02c", "p90": "#98df8a", "coverage": "#9467bd"}

QUERIES: dict[str, str] = {
    "daily": """
        SELECT local_date, any_value(hours) AS hours, sum(entries) AS entries, sum(exits) AS exits,
               avg(coverage) AS coverage, kpi_version
        FROM traffic_daily WHERE local_date BETWEEN $d0 AND $d1 GROUP BY local_date, kpi_version ORDER BY local_date
    """,
    "traffic_hourly": """
        SELECT local_date, local_hour, utc_offset_s, sum(entries) AS entries, sum(exits) AS exits,
               avg(coverage) AS coverage, kpi_version
        FROM traffic_hourly WHERE local_date BETWEEN $d0 AND $d1
        GROUP BY local_date, local_hour, utc_offset_s, kpi_version ORDER BY local_date, any_value(hour_start)
    """,
    "occupancy": """
        SELECT local_date, local_time, utc_offset_s, occupancy, coverage, kpi_version
        FROM occupancy WHERE local_date BETWEEN $d0 AND $d1 ORDER BY minute_start
    """,
    "zone_dwell": """
        SELECT camera_id, zone_id, count(*) AS visits, median(dwell_s) AS median_dwell_s,
               quantile_cont(dwell_s, 0.9) AS p90_dwell_s, kpi_version
        FROM visits WHERE counted AND local_date BETWEEN $d0 AND $d1
        GROUP BY camera_id, zone_id, kpi_version ORDER BY camera_id, zone_id, kpi_version
    """,
    "coverage": """
        SELECT camera_id, local_date, hours, share AS coverage
        FROM coverage_daily WHERE local_date BETWEEN $d0 AND $d1 ORDER BY camera_id, local_date
    """,
    "capture_rate": """
        SELECT local_date, entries, passers_by, capture_rate, coverage, kpi_version
        FROM capture_rate WHERE local_date BETWEEN $d0 AND $d1 ORDER BY local_date
    """,
    "bounce_rate": """
        SELECT camera_id, zone_id, local_date, visits, bounces, bounce_rate, coverage, kpi_version
        FROM bounce_rate WHERE local_date BETWEEN $d0 AND $d1 ORDER BY camera_id, zone_id, local_date
    """,
}


def fmt(value: Any) -> str:
    """The text of a number in both the CSV and the HTML: integers as is, floats to 4 decimals, NULL empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _query(
    setup: StoreSetup, data_dir: Path, d0: date, d1: date, trust: BlockTrust | None
) -> dict[str, tuple[list[str], list[list[str]]]]:
    con = connect_store(data_dir, setup, trust=trust)
    try:
        out = {}
        for name, sql in QUERIES.items():
            rel = con.execute(sql, {"d0": d0, "d1": d1})
            cols = [c[0] for c in rel.description]
            out[name] = (cols, [[fmt(v) for v in row] for row in rel.fetchall()])
        return out
    finally:
        con.close()


def _axes(ymax: float, label: str) -> list[str]:
    parts = [
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#333"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#333"/>',
        f'<text x="{PAD_L - 6}" y="{PAD_T + 4}" text-anchor="end" font-size="11">{fmt(float(ymax))}</text>',
        f'<text x="{PAD_L - 6}" y="{H - PAD_B}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{W // 2}" y="{H - 6}" text-anchor="middle" font-size="12">{html.escape(label)}</text>',
    ]
    return parts


def _svg(chart_id: str, title: str, parts: list[str]) -> str:
    body = "\n".join(parts)
    return (
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"'
        f' viewBox="0 0 {W} {H}" role="img" aria-label="{html.escape(title)}">\n<title>{html.escape(title)}</title>\n'
        f"{body}\n</svg>"
    )


def bar_chart(
    chart_id: str, title: str, series: Sequence[tuple[str, Sequence[float]]], labels: Sequence[str], xlabel: str
) -> str:
    """Grouped bars: ``series`` is (color, values) per group member; ``labels`` one per group (some shown)."""
    n = len(labels)
    ymax = max([v for _, vals in series for v in vals] + [1.0])
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    parts = _axes(ymax, xlabel)
    if n:
        group_w = plot_w / n
        bar_w = max(group_w * 0.8 / max(len(series), 1), 0.5)
        step = max(1, n // 12)
        for i, label in enumerate(labels):
            for j, (color, vals) in enumerate(series):
                h = plot_h * vals[i] / ymax
                x = PAD_L + i * group_w + group_w * 0.1 + j * bar_w
                parts.append(
                    f'<rect x="{x:.2f}" y="{H - PAD_B - h:.2f}" width="{bar_w:.2f}" height="{h:.2f}" fill="{color}"/>'
                )
            if i % step == 0:
                parts.append(
                    f'<text x="{PAD_L + (i + 0.5) * group_w:.1f}" y="{H - PAD_B + 14}" text-anchor="middle"'
                    f' font-size="10">{html.escape(label)}</text>'
                )
    return _svg(chart_id, title, parts)


def line_chart(chart_id: str, title: str, values: Sequence[float], labels: Sequence[str], color: str) -> str:
    """One polyline over ``values`` (e.g. occupancy per minute)."""
    ymax = max([*values, 1.0])
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    parts = _axes(ymax, "local time")
    n = len(values)
    if n:
        pts = " ".join(
            f"{PAD_L + plot_w * i / max(n - 1, 1):.2f},{H - PAD_B - plot_h * v / ymax:.2f}"
            for i, v in enumerate(values)
        )
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        step = max(1, n // 8)
        for i in range(0, n, step):
            parts.append(
                f'<text x="{PAD_L + plot_w * i / max(n - 1, 1):.1f}" y="{H - PAD_B + 14}" text-anchor="middle"'
                f' font-size="10">{html.escape(labels[i])}</text>'
            )
    return _svg(chart_id, title, parts)


def _table(name: str, cols: list[str], rows: list[list[str]], *, open_: bool = True) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "\n".join(
        f'<tr data-row="{i}">'
        + "".join(f'<td data-col="{c}">{html.escape(v)}</td>' for c, v in zip(cols, r, strict=True))
        + "</tr>"
        for i, r in enumerate(rows)
    )
    table = f'<table data-csv="{name}.csv"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'
    if open_:
        return table
    return f"<details><summary>{len(rows)} rows ({name}.csv)</summary>{table}</details>"


def _num(text: str) -> float:
    return float(text) if text else 0.0


_CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
"""


def _replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a new file in the same folder renamed over it: a file or a symlink already
    at ``path`` is replaced, never written through (a link planted in a shared output folder cannot make the report
    write into the data dir or anywhere else), and a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(
    data_dir: Path, setup: StoreSetup, date_from: date, date_to: date, out_dir: Path, trust: BlockTrust | None = None
) -> tuple[Path, list[Path]]:
    """Write ``report.html`` and one CSV per table into ``out_dir`` for local dates ``date_from..date_to``.

    Returns (html path, CSV paths). The HTML needs no network: charts are inline SVG, no script, system fonts.
    ``data_dir`` is only read, on a locked connection (:func:`storage.analytics.connect_store`); ``out_dir`` must be
    outside it.
    """
    out_dir = outside_data_dir(Path(out_dir), Path(data_dir), "the report folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _query(setup, Path(data_dir), date_from, date_to, trust)
    csv_paths = _write_csvs(data, out_dir)
    charts = _charts(data)
    title = f"Store {setup.store_id}: {date_from.isoformat()} to {date_to.isoformat()} ({setup.timezone})"
    legend = (
        f'<p class="legend"><span style="background:{COLORS["median"]}"></span>median'
        f'<span style="background:{COLORS["p90"]}"></span>p90</p>'
    )
    sections = [
        ("Daily summary", "", _table("daily", *data["daily"])),
        ("Traffic by hour", charts["traffic"], _table("traffic_hourly", *data["traffic_hourly"], open_=False)),
        ("Occupancy", charts["occupancy"], _table("occupancy", *data["occupancy"], open_=False)),
        ("Dwell per zone", charts["dwell"] + legend, _table("zone_dwell", *data["zone_dwell"])),
        ("Coverage", charts["coverage"], _table("coverage", *data["coverage"])),
        ("Capture rate", "", _table("capture_rate", *data["capture_rate"])),
        ("Bounce rate", "", _table("bounce_rate", *data["bounce_rate"])),
    ]
    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{svg}\n{tbl}\n</section>" for h, svg, tbl in sections)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        "<p>Local time of the store; coverage is the share of time the cameras were actually processed.</p>\n"
        f"{body}\n</body></html>\n"
    )
    html_path = out_dir / "report.html"
    _replace_file(html_path, page)
    log.info("store %s: report %s with %d CSV files", setup.store_id, html_path, len(csv_paths))
    return html_path, csv_paths


def _write_csvs(data: dict[str, tuple[list[str], list[Any]]], out_dir: Path) -> list[Path]:
    """One CSV per table, each replaced whole; their paths."""
    csv_paths: list[Path] = []
    for name, (cols, rows) in data.items():
        path = out_dir / f"{name}.csv"
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        writer.writerow(cols)
        writer.writerows(rows)
        _replace_file(path, buf.getvalue())
        csv_paths.append(path)

    return csv_paths


def _charts(data: dict[str, tuple[list[str], list[Any]]]) -> dict[str, str]:
    """The report's inline SVG charts: traffic, occupancy, dwell and coverage."""
    th_cols, th = data["traffic_hourly"]
    ix = {c: i for i, c in enumerate(th_cols)}
    traffic_svg = bar_chart(
        "chart-traffic",
        "Entries per local hour",
        [(COLORS["traffic"], [_num(r[ix["entries"]]) for r in th])],
        [f"{r[ix['local_date']][5:]} {int(r[ix['local_hour']]):02d}h" for r in th],
        "local date and hour",
    )
    oc_cols, oc = data["occupancy"]
    ox = {c: i for i, c in enumerate(oc_cols)}
    occupancy_svg = line_chart(
        "chart-occupancy",
        "Occupancy per minute",
        [_num(r[ox["occupancy"]]) for r in oc],
        [f"{r[ox['local_date']][5:]} {r[ox['local_time']]}" for r in oc],
        COLORS["occupancy"],
    )
    zd_cols, zd = data["zone_dwell"]
    zx = {c: i for i, c in enumerate(zd_cols)}
    dwell_svg = bar_chart(
        "chart-dwell",
        "Dwell per zone (median, p90), seconds",
        [
            (COLORS["median"], [_num(r[zx["median_dwell_s"]]) for r in zd]),
            (COLORS["p90"], [_num(r[zx["p90_dwell_s"]]) for r in zd]),
        ],
        [f"{r[zx['camera_id']]}/{r[zx['zone_id']]}" for r in zd],
        "camera / zone",
    )
    cv_cols, cv = data["coverage"]
    cx = {c: i for i, c in enumerate(cv_cols)}
    coverage_svg = bar_chart(
        "chart-coverage",
        "Share of each day processed, per camera",
        [(COLORS["coverage"], [_num(r[cx["coverage"]]) for r in cv])],
        [f"{r[cx['camera_id']]} {r[cx['local_date']][5:]}" for r in cv],
        "camera and local date",
    )
    return {"traffic": traffic_svg, "occupancy": occupancy_svg, "dwell": dwell_svg, "coverage": coverage_svg}
