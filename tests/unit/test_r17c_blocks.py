"""r17c review: materialised KPI blocks (storage/kpimat.py) and the 10-hour visit rule (storage/kpisql.py)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import storage.kpimat as kpimat
from storage.kpibuild import refresh_kpis
from storage.sandbox import KPI_DIR
from storage.segments import SegmentWriter
from tests.pki_helpers import NODES, StorePKI, make_pki
from tests.unit.test_kpi_signing import signed_refresh, trust, views
from tests.unit.test_kpimat import LATER
from tests.unit.test_kpimat import autumn as autumn
from tests.unit.test_kpis import TZ, V1, exit_, utc


@pytest.fixture
def pki(tmp_path: Path) -> StorePKI:
    return make_pki(tmp_path / "pki")


def test_r17c_a_view_file_swapped_after_the_check_is_read_as_signed(
    autumn: Path, pki: StorePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attach_materialised checks a block's files (sha256 + signature) in read_blocks, then re-opens them by path
    (read_parquet) after computing fingerprints and binding the live views: whoever can write kpi/ and swaps a view
    file in that window gets unsigned rows copied into the reader's connection/file. Here the swap is made at the
    start of snapshot_pieces (which attach_materialised calls between the check and the copy)."""
    (name,) = signed_refresh(autumn, pki)
    raw = views(autumn, None, materialised=False)[1]
    f = autumn / KPI_DIR / name / "traffic_daily.parquet"
    real = kpimat.snapshot_pieces

    def swap_then(con: duckdb.DuckDBPyConnection):  # type: ignore[no-untyped-def]
        with duckdb.connect() as c:
            forged = f"SELECT * REPLACE (entries * 100 AS entries) FROM read_parquet('{f}')"
            c.execute(f"COPY ({forged}) TO '{f}.new' (FORMAT parquet)")
        Path(f"{f}.new").replace(f)
        return real(con)

    monkeypatch.setattr(kpimat, "snapshot_pieces", swap_then)
    fresh, mat = views(autumn, trust(pki))
    assert fresh == 4
    # Correct behaviour: the rows read are the ones whose checksum was verified.
    assert mat["traffic_daily"] == raw["traffic_daily"], "forged rows were read from a block that passed the check"


def test_r17c_the_node_launders_a_file_swapped_during_its_refresh_into_a_signed_block(
    autumn: Path, pki: StorePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """refresh_kpis checks the month's block (read_blocks: checksums + signature), then computes the stale days
    (_compute: seconds to minutes), then _write_block copies the unchanged days from the old block's files *by
    path*, checksums the result and signs it. A view file of the old block replaced after the check (here: while the
    stale days are computed; in practice e.g. as soon as .tmp-*/coverage.parquet appears, before traffic_daily is
    copied) ends up in a new block the node signs: "a forged block is never laundered into a signed one" fails."""
    import storage.kpibuild as kpibuild

    (name,) = signed_refresh(autumn, pki)
    # A new segment on the 27th: the 26th and 27th become stale, the 24th and 25th are copied from the old block.
    SegmentWriter(autumn, "s1", TZ, "ws-a").write(
        "cam2", utc(2026, 10, 27, 4), utc(2026, 10, 27, 6), [], frames=100, token=1,
        config_version="c", model_version="m",
    )  # fmt: skip
    raw = views(autumn, None, materialised=False)[1]
    f = autumn / KPI_DIR / name / "traffic_daily.parquet"
    real = kpibuild._compute

    def compute_then_swap(*a, **kw):  # type: ignore[no-untyped-def]
        out = real(*a, **kw)
        with duckdb.connect() as c:
            c.execute(
                f"COPY (SELECT * REPLACE (entries * 100 AS entries) FROM read_parquet('{f}')) TO '{f}.new'"
                " (FORMAT parquet)"
            )
        Path(f"{f}.new").replace(f)
        return out

    monkeypatch.setattr(kpibuild, "_compute", compute_then_swap)
    written = signed_refresh(autumn, pki)
    monkeypatch.undo()
    assert written and written[0] != name
    fresh, mat = views(autumn, trust(pki))
    print("FRESH", fresh, [r[3:6] for r in mat["traffic_daily"]], [r[3:6] for r in raw["traffic_daily"]])
    assert mat["traffic_daily"] == raw["traffic_daily"], "the node signed forged rows copied from the old block"


def test_r17c_a_visit_entered_before_the_first_processed_day(tmp_path: Path) -> None:
    """A visit whose exit lies in the first processed day but whose enter lies the day before (dated then)."""
    from tests.unit.test_kpimat import autumn as fx
    from tests.unit.test_kpimat import views as kviews

    base = tmp_path / "b"
    base.mkdir()
    data = fx.__wrapped__(base)
    SegmentWriter(data, "s1", TZ, "ws-2").write(
        "cam1", utc(2026, 10, 23, 23), utc(2026, 10, 24, 0), [exit_(utc(2026, 10, 23, 23, 30), 66, "shelf", 7200.0)],
        frames=100, token=2, config_version="c", model_version="m",
    )  # fmt: skip
    assert refresh_kpis(data, now=LATER).days_computed >= 4
    fresh, mat = kviews(data, V1)
    raw = kviews(data, V1, materialised=False)[1]
    print("EARLY", fresh, [(r[2], r[8], r[10]) for r in raw["visits"]])
    assert fresh >= 4 and mat == raw


def test_r17c_a_fifo_block_sig_hangs_every_reader_and_the_node(autumn: Path, pki: StorePKI) -> None:
    """read_blocks/_check_block read block.sig with read_bytes() (no is_file check, no size bound before reading):
    whoever can write kpi/ makes block.sig a FIFO (or a link to /dev/zero: unbounded memory) in a folder whose
    files match its block.json, and every reader with a verifier (edgepair query/sql/report with TLS) and the node's
    housekeeping (refresh_kpis -> read_blocks, which also runs compaction and retention in the same loop) block."""
    import os
    import shutil
    import threading

    from storage.kpimat import read_blocks

    (name,) = signed_refresh(autumn, pki)
    evil = autumn / KPI_DIR / "2026-09.ffffffffffffffff"
    shutil.copytree(autumn / KPI_DIR / name, evil)
    (evil / "block.sig").unlink()
    os.mkfifo(evil / "block.sig")
    done = threading.Event()

    def read() -> None:
        read_blocks(autumn, V1, verifier=trust(pki).verifier, nodes=NODES)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    finished = done.wait(5.0)
    if not finished:  # unblock the reader
        fd = os.open(evil / "block.sig", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        done.wait(5.0)
    assert finished, "read_blocks blocked on a FIFO block.sig"
