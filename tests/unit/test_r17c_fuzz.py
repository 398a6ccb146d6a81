"""r17c review: random visit pieces (merge 3600 s, pieces up to 10 h, chains across midnights) around the spring
DST change; materialised days (some stale after a late segment) must equal the recomputed views."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.analytics import ensure_store_file, record_definition
from storage.kpibuild import refresh_kpis
from storage.kpis import StoreSetup
from storage.segments import SegmentWriter
from tests.unit.test_kpimat import LATER, V, views, write_spans
from tests.unit.test_kpis import LINES, OPEN, TZ, ZONES, exit_, utc


class _Close(float):
    """A float equal to another within a relative 1e-9: a mean can differ in the 15th digit (README, known)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and math.isclose(self, other, rel_tol=1e-9, abs_tol=1e-9)

    __hash__ = float.__hash__


def norm(d: dict) -> dict:
    """Rows sorted by their non-float values, floats compared within a relative 1e-9."""

    def key(r: tuple) -> str:
        return repr(tuple(None if isinstance(x, float) else x for x in r))

    return {
        k: sorted((tuple(_Close(x) if isinstance(x, float) else x for x in r) for r in v), key=key)
        for k, v in d.items()
    }


M = StoreSetup("s1", TZ, LINES, ZONES, bounce_s=30.0, visit_merge_s=3600.0, opening_hours=OPEN)


@pytest.mark.parametrize("seed", range(3))
def test_r17c_fuzz_chains_across_midnight(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    data = tmp_path / "s1"
    w = SegmentWriter(data, "s1", TZ, "ws-1")
    t0, t1 = utc(2026, 3, 26, 0), utc(2026, 4, 2, 0)
    ev = []
    for track in range(12):
        t = t0 + rnd.uniform(0, 5 * 86400)
        for _ in range(rnd.randint(1, 8)):
            dwell = rnd.choice([rnd.uniform(10, 600), rnd.uniform(3600, 36000), rnd.uniform(30000, 40000)])
            ev.append(exit_(t + dwell, track, "till", dwell, "cam2"))
            t += dwell + rnd.choice([rnd.uniform(0, 3599), rnd.uniform(3601, 7200), -rnd.uniform(0, 600)])
    ev = [e for e in ev if t0 <= e.ts < t1 - 86400]
    late = [e for e in ev if rnd.random() < 0.2]
    early = [e for e in ev if e not in late]
    write_spans(w, "cam2", t0, t1, early)
    ensure_store_file(data, M)
    record_definition(data, M.definition(), effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    refresh_kpis(data, now=LATER)
    f0, m0 = views(data, M)
    assert norm(m0) == norm(views(data, M, materialised=False)[1])
    # the late pieces arrive from the peer, in one segment per piece (a failover's windows)
    w2 = SegmentWriter(data, "s1", TZ, "ws-2")
    for i, e in enumerate(late):
        w2.write("cam2", e.ts - 1, e.ts + 1, [e], frames=10, token=2 + i, **V)
    fresh, mat = views(data, M)
    raw = views(data, M, materialised=False)[1]
    print("SEED", seed, "fresh", fresh, "visits", len(raw["visits"]), "late", len(late), "fresh before", f0)
    assert norm(mat) == norm(raw)
    refresh_kpis(data, now=LATER)
    fresh2, mat2 = views(data, M)
    assert fresh2 > fresh and norm(mat2) == norm(raw)
