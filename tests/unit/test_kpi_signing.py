"""Materialised KPI blocks are checked like segments (issue 17 review): the node signs ``block.json``, which lists
every view file's sha256; readers with the store's CA read only blocks signed by a workstation of the pair, every
reader checks the checksums. A block that fails is left out: its days are computed from the events (same numbers).
Real PKI (the store CA of tests/pki_helpers), real DuckDB, the ``autumn`` dataset of test_kpimat."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from storage.analytics import _connect, build_store_views
from storage.kpibuild import refresh_kpis
from storage.kpimat import BLOCK_FILE, BLOCK_SIG, BlockTrust, block_id, read_blocks
from storage.sandbox import KPI_DIR
from tests.pki_helpers import NODES, StorePKI, make_pki
from tests.unit.test_kpimat import LATER, view_rows
from tests.unit.test_kpimat import autumn as autumn
from tests.unit.test_kpis import V1


@pytest.fixture
def pki(tmp_path: Path) -> StorePKI:
    return make_pki(tmp_path / "pki")


def trust(pki: StorePKI, nodes: tuple[str, ...] = NODES) -> BlockTrust:
    return BlockTrust(pki.identity("ws-a").verifier(), nodes)


def views(data: Path, t: BlockTrust | None, materialised: bool = True) -> tuple[int, dict]:
    con = _connect(":memory:")
    try:
        fresh = build_store_views(con, data, V1, trust=t, materialised=materialised)
        return fresh, view_rows(con)
    finally:
        con.close()


def signed_refresh(data: Path, pki: StorePKI, signer: str = "ws-a", **kw: object) -> list[str]:
    ident = pki.identity(signer)
    return refresh_kpis(data, now=LATER, signer=ident.signer(), verifier=ident.verifier(), nodes=NODES, **kw).written  # type: ignore[arg-type]


def forge(folder: Path, resign: StorePKI | None = None, as_node: str = "ws-a") -> None:
    """Multiply the daily entries by 100 and rewrite block.json's checksum to match (and sign it with ``resign``'s
    key of ``as_node`` when given): what someone who can write ``kpi/`` but has no workstation key can do."""
    f = folder / "traffic_daily.parquet"
    with duckdb.connect() as c:
        c.execute(
            f"COPY (SELECT * REPLACE (entries * 100 AS entries) FROM read_parquet('{f}')) TO '{f}.new' (FORMAT parquet)"
        )
    Path(f"{f}.new").replace(f)
    meta = json.loads((folder / BLOCK_FILE).read_text())
    meta["files"]["traffic_daily"] = hashlib.sha256(f.read_bytes()).hexdigest()
    raw = (json.dumps(meta, indent=1) + "\n").encode()
    (folder / BLOCK_FILE).write_bytes(raw)
    if resign is not None:
        doc = resign.identity(as_node).signer().sign(block_id(folder), hashlib.sha256(raw).hexdigest())
        (folder / BLOCK_SIG).write_bytes(doc)


def test_a_signed_block_is_read_and_equals_the_recomputed_views(autumn: Path, pki: StorePKI) -> None:
    (name,) = signed_refresh(autumn, pki)
    assert (autumn / KPI_DIR / name / BLOCK_SIG).is_file()
    fresh, mat = views(autumn, trust(pki))
    assert fresh == 4
    assert mat == views(autumn, None, materialised=False)[1]


@pytest.mark.parametrize("how", ["checksums rewritten", "re-signed by another CA", "signed outside the pair"])
def test_a_forged_block_is_left_out_and_its_days_computed(
    autumn: Path, pki: StorePKI, tmp_path: Path, how: str
) -> None:
    (name,) = signed_refresh(autumn, pki)
    folder = autumn / KPI_DIR / name
    raw = views(autumn, None, materialised=False)[1]
    nodes = NODES
    if how == "checksums rewritten":
        forge(folder)
    elif how == "re-signed by another CA":
        forge(folder, make_pki(tmp_path / "attacker"))
    else:  # a store certificate that is not one of the pair's (a replaced workstation never revoked)
        forge(folder, pki, as_node="ws-b")
        nodes = ("ws-a",)
    assert read_blocks(autumn, V1, verifier=trust(pki).verifier, nodes=nodes) == []
    fresh, mat = views(autumn, trust(pki, nodes))
    assert (fresh, mat["traffic_daily"]) == (0, raw["traffic_daily"])
    # The node never copies a forged day into a new signed block: every day is computed again.
    rep = refresh_kpis(autumn, now=LATER, grace_s=0.0, signer=pki.identity("ws-a").signer(),
                       verifier=trust(pki).verifier, nodes=nodes)  # fmt: skip
    assert (rep.days_computed, rep.days_copied) == (4, 0)
    assert views(autumn, trust(pki, nodes)) == (4, raw)


def test_without_a_verifier_the_checksums_still_catch_a_changed_file(autumn: Path, pki: StorePKI) -> None:
    (name,) = signed_refresh(autumn, pki)
    f = autumn / KPI_DIR / name / "traffic_daily.parquet"
    with duckdb.connect() as c:
        c.execute(f"COPY (SELECT * REPLACE (entries * 100 AS entries) FROM read_parquet('{f}')) TO '{f}.new'")
    Path(f"{f}.new").replace(f)
    assert views(autumn, None)[0] == 0


def test_an_unsigned_block_is_not_read_where_blocks_are_signed_and_is_replaced(autumn: Path, pki: StorePKI) -> None:
    (unsigned,) = refresh_kpis(autumn, now=LATER).written  # a node without TLS wrote it
    assert not (autumn / KPI_DIR / unsigned / BLOCK_SIG).exists()
    assert views(autumn, None)[0] == 4  # plain text: checksums only
    assert views(autumn, trust(pki))[0] == 0
    rep = refresh_kpis(autumn, now=LATER, grace_s=0.0, signer=pki.identity("ws-a").signer(),
                       verifier=trust(pki).verifier, nodes=NODES)  # fmt: skip
    assert (rep.days_computed, rep.written, rep.deleted) == (4, [unsigned], [])  # same days: same name, replaced
    assert (autumn / KPI_DIR / unsigned / BLOCK_SIG).is_file()
    assert views(autumn, trust(pki))[0] == 4


def test_no_block_is_read_when_signatures_cannot_be_checked(autumn: Path, pki: StorePKI) -> None:
    signed_refresh(autumn, pki)
    fresh, mat = views(autumn, BlockTrust(use_blocks=False))
    assert (fresh, mat) == (0, views(autumn, None, materialised=False)[1])


def test_folders_readers_refuse_are_removed_after_the_grace_period(autumn: Path, pki: StorePKI) -> None:
    (name,) = signed_refresh(autumn, pki)
    old_format = autumn / KPI_DIR / "2026-09.0123456789abcdef"
    old_format.mkdir()
    (old_format / BLOCK_FILE).write_text(json.dumps({"format": 1, "store_id": "s1", "timezone": V1.timezone}))
    signed_refresh(autumn, pki)  # within the grace period: kept (a reader may still use it)
    assert old_format.exists()
    rep = refresh_kpis(autumn, now=LATER, grace_s=0.0, signer=pki.identity("ws-a").signer(),
                       verifier=trust(pki).verifier, nodes=NODES)  # fmt: skip
    assert (rep.deleted, old_format.exists(), (autumn / KPI_DIR / name).is_dir()) == ([old_format.name], False, True)


def test_edgepair_verify_checks_the_blocks_too(autumn: Path, pki: StorePKI) -> None:
    """The auditor's check: a good signed block passes, a forged one fails the audit with its reason (readers only
    leave it out, so it changes no number, but someone wrote in the data dir)."""
    from storage.verify import verify_data_dir

    (name,) = signed_refresh(autumn, pki)
    verifier = trust(pki).verifier
    report = verify_data_dir(autumn, verifier, nodes=NODES)
    assert (report.blocks, report.bad_blocks) == (1, [])
    forge(autumn / KPI_DIR / name)
    report = verify_data_dir(autumn, verifier, nodes=NODES)
    assert (report.blocks, report.bad_blocks, report.passed) == (1, [f"{KPI_DIR}/{name}"], False)
    assert "bad signature" in report.problems[f"{KPI_DIR}/{name}"]
    assert "1 KPI blocks (1 bad)" in report.summary()
