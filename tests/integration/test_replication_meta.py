"""The dataset's own files replicate with the segments: store.json, and the KPI definitions history merged so that
both workstations date a definition change alike. Two in-process Replicators with real Flight servers on loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from failover.etcd_cluster import free_port
from storage.analytics import DEFINITIONS_FILE, STORE_FILE, ensure_store_file, load_definitions, record_definition
from storage.kpis import KpiDefinition, StoreSetup
from storage.replication import Replicator
from tests.harness.pair import wait_for

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
A = KpiDefinition(bounce_s=10, visit_merge_s=5, opening_hours=("00:00", "24:00"))
B = KpiDefinition(bounce_s=20, visit_merge_s=5, opening_hours=("08:00", "21:00"))


def test_store_file_and_definitions_converge(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    ensure_store_file(a_dir, StoreSetup("s1", "Europe/London"))
    record_definition(a_dir, A, effective_from=T0)
    record_definition(a_dir, B, effective_from=T0 + timedelta(days=3))  # ws-a ran the new config first
    record_definition(b_dir, A, effective_from=T0 + timedelta(seconds=7))
    record_definition(b_dir, B, effective_from=T0 + timedelta(days=3, seconds=40))
    pa_, pb = free_port(), free_port()
    a = Replicator(a_dir, "s1", "ws-a", f"grpc://127.0.0.1:{pb}", port=pa_, anti_entropy_s=0.5)
    b = Replicator(b_dir, "s1", "ws-b", f"grpc://127.0.0.1:{pa_}", port=pb, anti_entropy_s=0.5)
    a.start()
    b.start()
    try:
        wait_for(
            lambda: (
                (b_dir / STORE_FILE).exists()
                and (a_dir / DEFINITIONS_FILE).read_bytes() == (b_dir / DEFINITIONS_FILE).read_bytes()
            ),
            30,
            "both definitions histories to converge",
            period=0.2,
        )
    finally:
        b.stop()
        a.stop()
    history = load_definitions(b_dir)
    assert [(r.version, r.effective_from) for r in history] == [
        (A.version(), T0),
        (B.version(), T0 + timedelta(days=3)),
    ]
    assert (b_dir / STORE_FILE).read_bytes() == (a_dir / STORE_FILE).read_bytes()
