"""r17c review: the SNAPSHOT_GONE guard of storage/views.py (_still_there) covers the events views but not
``segment_meta``, a public view of the analyst's file and of ``edgepair sql``/``query`` (VIEW_NAMES): once compaction
removed a snapshot's sources, ``segment_meta`` silently returns fewer rows (24 -> 0 here) instead of the one line."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from storage.analytics import open_analytics
from storage.compaction import compact
from tests.unit.test_kpimat import LATER
from tests.unit.test_kpimat import autumn as autumn
from tests.unit.test_kpis import V1


def test_r17c_segment_meta_is_guarded_too(autumn: Path, tmp_path: Path) -> None:
    db = open_analytics(autumn, V1, tmp_path / "out" / "s1.duckdb")
    cwd = Path.cwd()
    try:
        os.chdir(db.parent)
        with duckdb.connect(str(db), read_only=True) as con:
            before = con.execute("SELECT count(*) FROM segment_meta").fetchone()[0]
        assert before == 24
        compact(autumn, node="ws-1", now=LATER, grace_s=0.0)
        assert compact(autumn, node="ws-1", now=LATER, grace_s=0.0).deleted
        with duckdb.connect(str(db), read_only=True) as con:
            with pytest.raises(duckdb.InvalidInputException, match="build them again"):
                con.execute("SELECT count(*) FROM events").fetchone()  # guarded
            with pytest.raises(duckdb.InvalidInputException, match="build them again"):  # was 0 of 24, silently
                con.execute("SELECT count(*) FROM segment_meta").fetchone()
    finally:
        os.chdir(cwd)
