"""The pair over real Flight (mutual TLS on loopback): only its workstations call, sign and produce; compacted files
hold exactly the rows they replace; nested JSON and unexpected errors are refusals, never tracebacks; the client
checks that the server is its peer; uploads are bounded in number."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from cluster.pki import CertDir
from storage import replserver
from storage.compaction import build_compacted
from storage.flightauth import client_kwargs
from storage.replclient import PeerClient
from storage.segments import SegmentWriter, _to_parquet_bytes
from tests.harness.pair import wait_for
from tests.integration.test_replication_security import (
    TZ,
    N,
    SecurePair,
    _segment,
    _signed,
    catalog,
    kpis,
    node_client,
    push,
    snapshot,
    write,
)
from tests.pki_helpers import StorePKI, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> StorePKI:
    p = make_pki(tmp_path / "pki")
    CertDir(p.path).issue("ws-c", "node", ["127.0.0.1", "localhost"])  # of the store CA, not of the pair
    return p


@pytest.fixture
def secure(tmp_path: Path, pki: StorePKI) -> Iterator[SecurePair]:
    write(tmp_path / "ws-a", pki.identity("ws-a").signer(), range(N))
    p = SecurePair(tmp_path, pki)
    try:
        p.start("ws-a")
        p.start("ws-b", max_token=lambda: 1000)
        wait_for(lambda: len(p.reps["ws-b"].live_catalog()) == N, 30, "ws-b to hold ws-a's files", period=0.1)
        yield p
    finally:
        for r in p.reps.values():
            r.stop()


def test_a_node_outside_the_pair_can_neither_call_nor_sign(secure: SecurePair) -> None:
    b = secure.reps["ws-b"]
    before = snapshot(secure.tmp / "ws-b")
    outsider = node_client(secure, "ws-c")
    with pytest.raises(flight.FlightUnauthenticatedError, match="ws-c is not a workstation"):
        catalog(outsider)
    outsider.close()
    assert b.refusal_counts() == {"auth": 1}
    # a segment ws-c produced and signed, pushed by a node of the pair: refused for good
    scratch = secure.tmp / "scratch"
    SegmentWriter(scratch, "s1", TZ, "ws-c", signer=secure.pki.identity("ws-c").signer())
    sid, data = _segment(scratch, secure.pki, 200)
    sid_c = sid.replace(".ws-a.", ".ws-c.")
    t = pq.read_table(pa.BufferReader(data))
    md = {**t.schema.metadata, b"edgepair.segment_id": sid_c.encode(), b"edgepair.node": b"ws-c"}
    t = t.set_column(t.schema.get_field_index("node"), t.schema.field("node"), pa.array(["ws-c"] * t.num_rows))
    t = t.set_column(t.schema.get_field_index("segment_id"), t.schema.field("segment_id"),
                     pa.array([sid_c] * t.num_rows))  # fmt: skip
    data_c = _to_parquet_bytes(t.replace_schema_metadata(md))
    client = node_client(secure)
    with pytest.raises(flight.FlightServerError, match=r"refused: .*ws-c"):
        push(client, sid_c, data_c, _signed(secure.pki, sid_c, data_c, node="ws-c"))
    client.close()
    assert b.refusal_counts() == {"auth": 1, "foreign_node": 1}
    assert b._refused_seen == {sid_c: hashlib.sha256(data_c).hexdigest()}  # not fetched again
    assert snapshot(secure.tmp / "ws-b") == before


def _rewritten_hour(secure: SecurePair, flip: bool) -> tuple[str, bytes, list[str]]:
    """The hour file ws-a would build from the segments ws-b holds, its directions flipped if ``flip``."""
    a_state = secure.reps["ws-a"].rescan()
    sources = [e for e in a_state.live() if not e.compacted]
    cid, _path, data = build_compacted(secure.tmp / "ws-a", sources, level="hour",
                                       start=min(e.window_start for e in sources), node="ws-a")  # fmt: skip
    if flip:
        t = pq.read_table(pa.BufferReader(data))
        i = t.schema.get_field_index("direction")
        t = t.set_column(i, t.schema.field(i), pc.if_else(pc.equal(t.column(i), "in"), "out", "in"))
        data = _to_parquet_bytes(t)
    return cid, data, [e.segment_id for e in sources]


def test_a_compacted_file_must_hold_the_rows_it_replaces(secure: SecurePair) -> None:
    b = secure.reps["ws-b"]
    data_b = secure.tmp / "ws-b"
    before, kpi_before = snapshot(data_b), kpis(data_b)
    client = node_client(secure)
    cid, forged, _ = _rewritten_hour(secure, flip=True)  # same runs, same counts, signed by the compactor
    with pytest.raises(flight.FlightServerError, match=r"refused: .*column direction differs"):
        push(client, cid, forged, _signed(secure.pki, cid, forged))
    assert b.refusal_counts() == {"compacted_content": 1}
    assert snapshot(data_b) == before and kpis(data_b) == kpi_before
    assert [p.name.split(".")[-2] for p in (data_b / "refused").glob("*.parquet")] == [
        hashlib.sha256(forged).hexdigest()[:12]
    ]
    cid, honest, replaced = _rewritten_hour(secure, flip=False)
    push(client, cid, honest, _signed(secure.pki, cid, honest))  # the honest one supersedes the segments
    client.close()
    state = b.rescan()
    assert cid in state.entries and set(replaced) <= set(state.superseded)
    assert kpis(data_b) == kpi_before


def test_nested_json_and_unexpected_errors_are_refusals_without_tracebacks(
    secure: SecurePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = secure.reps["ws-b"]
    client = node_client(secure)
    sid, data = _segment(secure.tmp / "scratch", secure.pki, 300)
    for call, reason in (
        (lambda: push(client, sid, data, b"[" * 8000), "signature"),
        (lambda: client.do_get(flight.Ticket(b"batch:" + b"[" * 100_000)).read_all(), "ticket"),
        (lambda: list(client.do_action(flight.Action("sigs", b"[" * 100_000))), "ticket"),
    ):
        before = b.refusal_counts().get(reason, 0)
        with pytest.raises(flight.FlightServerError) as info:
            call()
        assert str(info.value).startswith("refused") and "Traceback" not in str(info.value)
        assert b.refusal_counts()[reason] == before + 1
    assert b.refusal_counts() == {"signature": 1, "ticket": 2}

    def boom() -> dict[str, str]:
        raise RuntimeError(f"secret detail in {secure.tmp}")

    monkeypatch.setattr(b, "live_catalog", boom)
    with pytest.raises(flight.FlightServerError) as info:
        catalog(client)
    assert "internal error (RuntimeError)" in str(info.value)
    assert "secret" not in str(info.value) and str(secure.tmp) not in str(info.value)
    assert "Traceback" not in str(info.value) and ".py" not in str(info.value)
    client.close()


def test_the_replication_loop_survives_any_exception(secure: SecurePair, monkeypatch: pytest.MonkeyPatch) -> None:
    a = secure.reps["ws-a"]
    real = PeerClient.anti_entropy
    failures = [RecursionError("nested"), AttributeError("'list' object has no attribute 'items'")]

    def flaky(client: flight.FlightClient) -> None:
        if failures:
            raise failures.pop(0)
        real(a.client, client)

    errors_before = a.peer.errors
    monkeypatch.setattr(a.client, "anti_entropy", flaky)  # ws-a's loop only: ws-b's must not take a failure
    a.wake.set()
    a.client_next_sync = 0
    write(secure.tmp / "ws-b", secure.pki.identity("ws-a").signer(), range(N, N + 3))  # ws-b gains ws-a's files
    secure.reps["ws-b"].rescan()
    wait_for(lambda: not failures and a.peer.errors >= errors_before + 2, 30, "both failures", period=0.1)
    wait_for(lambda: len(a.live_catalog()) == N + 3, 30, "the loop to pull again", period=0.1)
    assert all(t.is_alive() for t in a._threads)


def test_the_client_refuses_a_server_that_is_not_its_peer(tmp_path: Path, pki: StorePKI) -> None:
    """ws-a configured with the pair (ws-a, ws-c) meets ws-b: ws-b proves it is ws-b, so ws-a pulls nothing."""
    write(tmp_path / "ws-b", pki.identity("ws-a").signer(), range(5))
    p = SecurePair(tmp_path, pki)
    try:
        p.start("ws-b", nodes=("ws-a", "ws-b"))
        a = p.start("ws-a", nodes=("ws-a", "ws-c"))
        wait_for(lambda: a.refusal_counts().get("peer_identity", 0) >= 1, 30, "the peer refused", period=0.1)
        assert a.live_catalog() == {} and "ws-b" in str(a.peer.last_error) and not a.peer.connected
    finally:
        for r in p.reps.values():
            r.stop()


def test_at_most_four_uploads_at_once(secure: SecurePair, monkeypatch: pytest.MonkeyPatch) -> None:
    b = secure.reps["ws-b"]
    assert b._server is not None
    monkeypatch.setattr(replserver, "UPLOAD_WAIT_S", 0.3)
    for _ in range(replserver.MAX_UPLOADS):
        assert b._server.uploads.acquire(timeout=1)
    client = flight.FlightClient(secure.url("ws-b"), **client_kwargs(secure.pki.identity("ws-a")))
    sid, data = _segment(secure.tmp / "scratch", secure.pki, 400)
    try:
        with pytest.raises(flight.FlightServerError, match=r"refused: .*4 uploads already in progress"):
            push(client, sid, data, _signed(secure.pki, sid, data))
        assert b.refusal_counts() == {"busy": 1}
    finally:
        for _ in range(replserver.MAX_UPLOADS):
            b._server.uploads.release()
    push(client, sid, data, _signed(secure.pki, sid, data))
    client.close()
    assert sid in b.live_catalog()
