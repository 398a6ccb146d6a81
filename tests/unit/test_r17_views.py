"""Review r17 (issue 17): ``has_events`` (the analyst commands' "no events" one-liner) on a file name that is not
UTF-8, which the README says is left out with one warning. Tiny data dir, no DuckDB."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from storage.segments import SegmentWriter
from storage.views import has_events, scan_readonly
from tests.unit.test_kpis import V, cross, utc


def test_r17_has_events_with_a_non_utf8_file_name_is_not_a_traceback(tmp_path: Path) -> None:
    """Without the node's index (a copy on a laptop), ``has_events`` reads the footers in name order and calls
    ``pq.read_metadata`` on a non-UTF-8 name: UnicodeEncodeError (a ValueError, not caught), so every analyst
    command (query, sql, analytics open/export, report) ends in a traceback before ``scan_readonly`` can leave the
    file out with its warning."""
    data = tmp_path / "s1"
    w = SegmentWriter(data, "s1", "Europe/London", "ws-1")
    w.write("cam1", utc(2026, 7, 1, 10), utc(2026, 7, 1, 11), [cross(utc(2026, 7, 1, 10, 30), 1, "door", "in")],
            frames=10, token=1, **V)  # fmt: skip
    (seg,) = (data / "events").rglob("*.parquet")
    early = os.fsencode(data / "events" / "store=s1" / "date=2000-01-01" / "camera=cam1")  # sorts first
    os.makedirs(early)
    shutil.copy(os.fsencode(seg), early + b"/\xff.parquet")
    assert len(scan_readonly(data).left_out) == 1  # the views leave it out with one warning
    assert has_events(data)  # UnicodeEncodeError today
