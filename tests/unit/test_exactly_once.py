"""Exactly-once crediting: highest fencing token wins, tie by node name; losers stay visible in events_audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.catalog import CatalogEntry, Piece, Run, credit_pieces
from storage.segments import SegmentWriter
from storage.views import open_dataset
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events

K = 4


def entry(cam: str, start: float, end: float, node: str, token: int) -> CatalogEntry:
    return CatalogEntry(f"{cam}.{start}.{node}.{token}", "s1", cam, start, end, node, token, 0, 1, "x", 1, "p", TZ)


@pytest.mark.parametrize(
    ("claims", "credited", "lost"),
    [
        ([("a", 5, 0, 10)], [("a", 5, 0, 10)], []),
        ([("a", 5, 0, 10), ("b", 7, 5, 15)], [("a", 5, 0, 5), ("b", 7, 5, 15)], [("a", 5, 5, 10)]),
        ([("a", 7, 0, 10), ("b", 7, 0, 10)], [("b", 7, 0, 10)], [("a", 7, 0, 10)]),
        ([("a", 9, 0, 10), ("b", 7, 5, 15)], [("a", 9, 0, 10), ("b", 7, 10, 15)], [("b", 7, 5, 10)]),
        ([("a", 1, 0, 2), ("a", 1, 4, 6)], [("a", 1, 0, 2), ("a", 1, 4, 6)], []),
    ],
)
def test_credit_pieces(claims: list[tuple[str, int, float, float]], credited: list, lost: list) -> None:  # type: ignore[type-arg]
    entries = [entry("c", s, e, n, t) for n, t, s, e in claims]
    got_c, got_l = credit_pieces(entries)
    assert got_c == [Piece("c", s, e, n, t) for n, t, s, e in credited]
    assert got_l == [Piece("c", s, e, n, t) for n, t, s, e in lost]


def test_compacted_runs_are_claims() -> None:
    e = entry("c", 0, 10, "x", 0)
    e = CatalogEntry(**{**e.__dict__, "segment_id": "c.0.hour~ab", "runs": (Run(0, 4, "a", 1), Run(2, 10, "b", 2))})
    assert credit_pieces([e]) == ([Piece("c", 0, 2, "a", 1), Piece("c", 2, 10, "b", 2)], [Piece("c", 2, 4, "a", 1)])


def write(w: SegmentWriter, cam: str, windows: range, token: int) -> None:
    for i in windows:
        ws = DEFAULT_BASE + i
        w.write(cam, ws, ws + 1, window_events(cam, DEFAULT_BASE, i, K, 1), frames=10, token=token,
                config_version="c", model_version="m")  # fmt: skip


def test_views_count_overlapping_producers_once_and_audit_the_rest(tmp_path: Path) -> None:
    write(SegmentWriter(tmp_path, "s1", TZ, "ws-a"), "cam-1", range(0, 20), token=5)
    write(SegmentWriter(tmp_path, "s1", TZ, "ws-b"), "cam-1", range(10, 30), token=7)
    write(SegmentWriter(tmp_path, "s1", TZ, "ws-b"), "cam-2", range(0, 5), token=7)
    con = open_dataset(tmp_path, TZ)
    assert con.execute("SELECT count(*) FROM events").fetchall() == [(35 * K,)]
    assert con.execute("SELECT count(*) FROM events_audit").fetchall() == [(45 * K,)]
    lost = con.execute("SELECT node, token, count(*) FROM events_audit WHERE NOT credited GROUP BY ALL").fetchall()
    assert lost == [("ws-a", 5, 10 * K)]
    assert con.execute("SELECT sum(ins + outs) FROM traffic_hourly").fetchall() == [(35 * K,)]
    cov = con.execute("SELECT camera_id, local_hour, seconds_covered, nodes FROM coverage ORDER BY 1").fetchall()
    assert cov == [("cam-1", 11, 30.0, "ws-a,ws-b"), ("cam-2", 11, 5.0, "ws-b")]
    win = con.execute("SELECT node, credited, count(*) FROM windows GROUP BY ALL ORDER BY ALL").fetchall()
    assert win == [("ws-a", False, 10), ("ws-a", True, 10), ("ws-b", True, 25)]


def test_gap_shows_as_missing_coverage(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, "s1", TZ, "ws-a")
    write(w, "cam-1", range(0, 10), token=1)
    write(w, "cam-1", range(40, 50), token=2)
    con = open_dataset(tmp_path, TZ)
    assert con.execute("SELECT seconds_covered, share FROM coverage").fetchall() == [(20.0, 20 / 3600)]
