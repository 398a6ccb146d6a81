"""r17c review: 4da3cfb changed the visits SQL (MAX_VISIT_S) without bumping storage.kpimat.MAT_FORMAT (b131821 had
set it to 2). Blocks written by b131821 (format 2, checksummed, signed) have the same fingerprints and are read as
fresh by dba0b59: their visits/zone_dwell/bounce_rate keep presences longer than 10 hours, the recomputed views drop
them, and the node never rewrites those days. Cross-commit repro: /tmp/r17c/mk_old_blocks.py run on b131821, then
/tmp/r17c/read_blocks.py on dba0b59 -> DIFFER. Here the old SQL is simulated by raising MAX_VISIT_S while the node
writes the block (what b131821's SQL did: no cap)."""

from __future__ import annotations

from pathlib import Path

import pytest

import storage.kpisql as kpisql
from storage.kpibuild import refresh_kpis
from storage.segments import SegmentWriter
from tests.unit.test_kpimat import LATER, V, views
from tests.unit.test_kpimat import autumn as autumn
from tests.unit.test_kpis import TZ, V1, exit_, utc


def test_r17c_blocks_of_a_previous_visit_sql_are_stale(autumn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SegmentWriter(autumn, "s1", TZ, "ws-2").write(
        "cam2", utc(2026, 10, 25, 10), utc(2026, 10, 25, 12), [], frames=100, token=2, **V)  # fmt: skip
    SegmentWriter(autumn, "s1", TZ, "ws-1").write(
        "cam2", utc(2026, 10, 25, 22, 30), utc(2026, 10, 25, 23, 30),
        [exit_(utc(2026, 10, 25, 23), 77, "till", 12 * 3600.0, "cam2")], frames=100, token=1, **V,
    )  # fmt: skip
    monkeypatch.setattr(kpisql, "MAX_VISIT_S", 1e12)  # the SQL of b131821 (same MAT_FORMAT, same fingerprints)
    assert refresh_kpis(autumn, now=LATER).days_computed == 4
    monkeypatch.undo()
    fresh, mat = views(autumn, V1)  # the SQL's hash is in every fingerprint: no day of the old SQL is fresh
    raw = views(autumn, V1, materialised=False)[1]
    assert (fresh, mat["visits"]) == (0, raw["visits"])
    assert refresh_kpis(autumn, now=LATER).days_computed == 4  # was 0: the node kept the old rows forever
    assert views(autumn, V1) == (4, raw)
