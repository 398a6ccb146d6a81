"""The attack suite of replication: a real pair of Replicators over mutual TLS on loopback, attacked from outside
(no certificate, another CA, the witness's certificate, a forged call signature) and from a node's own credentials
(traversal ids, overwrite, a huge window, a future schema, a token from the future, a forged compacted file, an
oversized upload). Each attack is refused and counted by reason; the node keeps serving; afterwards the data dir's
files and the KPI query results are byte for byte what they were."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from failover.etcd_cluster import free_port
from storage import replserver
from storage.catalog import Run, runs_to_kv
from storage.flightauth import H_CERT, H_NODE, H_SIG, H_TIME, call_message, client_kwargs
from storage.replication import Replicator
from storage.replserver import CHUNK_SCHEMA
from storage.schema import EVENT_SCHEMA, SegmentMeta, events_to_table, with_segment_meta
from storage.segments import SegmentWriter, _to_parquet_bytes
from storage.verify import verify_data_dir
from storage.views import run_query
from tests.harness.pair import wait_for
from tests.harness.replnode import DEFAULT_BASE, TZ, window_events
from tests.pki_helpers import WITNESS, StorePKI, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> StorePKI:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def other_pki(tmp_path: Path) -> StorePKI:
    """Another CA with certificates of the same store and names: what an attacker with their own CA holds."""
    return make_pki(tmp_path / "other-pki")


K = 3
N = 20


class SecurePair:
    def __init__(self, tmp: Path, pki: StorePKI) -> None:
        self.tmp, self.pki = tmp, pki
        self.ports = {"ws-a": free_port(), "ws-b": free_port()}
        self.reps: dict[str, Replicator] = {}

    def start(self, node: str, **kw: Any) -> Replicator:
        peer = "ws-b" if node == "ws-a" else "ws-a"
        r = Replicator(
            self.tmp / node, "s1", node, f"grpc://127.0.0.1:{self.ports[peer]}", port=self.ports[node],
            anti_entropy_s=0.5, identity=self.pki.identity(node), **{"nodes": ("ws-a", "ws-b"), **kw},
        )  # fmt: skip
        r.start()
        self.reps[node] = r
        return r

    def url(self, node: str) -> str:
        return f"grpc+tls://127.0.0.1:{self.ports[node]}"


def snapshot(data: Path) -> dict[str, str]:
    """sha256 of every file of the data dir and of its parent (the other node's dir, the pki, ...), but the node's own
    cache and status (``catalog/``) and what it keeps of refused files (``refused/``, checked apart)."""
    root = data.parent
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {"catalog", "refused", "quarantine"} & set(p.relative_to(root).parts)
    }


def kpis(data: Path) -> list[Any]:
    sql = "SELECT camera_id, local_hour, ins, outs FROM traffic_hourly ORDER BY ALL"
    return run_query(data, TZ, sql).to_pylist()


def write(data: Path, signer: Any, windows: range, token: int = 5, cam: str = "cam-1") -> None:
    w = SegmentWriter(data, "s1", TZ, "ws-a", signer=signer)
    for i in windows:
        ws = DEFAULT_BASE + i
        w.write(cam, ws, ws + 1, window_events(cam, DEFAULT_BASE, i, K, 1), frames=10, token=token,
                config_version="c", model_version="m")  # fmt: skip


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


def node_client(p: SecurePair, as_node: str = "ws-a") -> flight.FlightClient:
    return flight.FlightClient(p.url("ws-b"), **client_kwargs(p.pki.identity(as_node)))


def catalog(client: flight.FlightClient) -> dict[str, str]:
    return json.loads(next(iter(client.do_action(flight.Action("catalog", b"")))).body.to_pybytes())


HANDSHAKE_FAILED = r"(?i)handshake|ssl|tls|certificate|socket closed|connection reset|failed to connect"


def push(client: flight.FlightClient, sid: str, data: bytes, sig: bytes | None, sha: str | None = None) -> None:
    _push_opts(client, sid, data, sig, flight.FlightCallOptions(), sha)


def _push_opts(client: flight.FlightClient, sid: str, data: bytes, sig: bytes | None, opts: flight.FlightCallOptions,
               sha: str | None = None) -> None:  # fmt: skip
    parts = [sid.encode(), (sha or hashlib.sha256(data).hexdigest()).encode(), *([sig] if sig else [])]
    writer, _ = client.do_put(flight.FlightDescriptor.for_path(*parts), CHUNK_SCHEMA, options=opts)
    for i in range(0, max(1, len(data)), 1 << 20):
        writer.write_batch(pa.record_batch([pa.array([data[i : i + (1 << 20)]], pa.binary())], CHUNK_SCHEMA))
    writer.close()


class _Headers(flight.ClientMiddlewareFactory):  # type: ignore[misc]
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__()
        self.headers = headers

    def start_call(self, info: Any) -> Any:
        outer = self

        class M(flight.ClientMiddleware):  # type: ignore[misc]
            def sending_headers(self) -> dict[str, str]:
                return outer.headers

        return M()


def forged_headers(pki: StorePKI, claimed: str, key_of: str, cert_of: str) -> dict[str, str]:
    """Headers claiming ``claimed`` with ``cert_of``'s certificate, signed by ``key_of``'s key."""
    t = int(time.time())
    key = serialization.load_pem_private_key((pki.path / f"{key_of}.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    sig = key.sign(call_message(pki.store, claimed, t), ec.ECDSA(hashes.SHA256()))
    cert = base64.b64encode((pki.path / f"{cert_of}.crt").read_bytes()).decode()
    return {H_NODE: claimed, H_TIME: str(t), H_CERT: cert, H_SIG: base64.b64encode(sig).decode()}


def tls_client(p: SecurePair, creds_of: str, middleware: list[Any], pki_dir: Path | None = None) -> flight.FlightClient:
    d = pki_dir or p.pki.path
    return flight.FlightClient(
        p.url("ws-b"), tls_root_certs=(p.pki.path / "ca.crt").read_bytes(),
        cert_chain=(d / f"{creds_of}.crt").read_bytes(), private_key=(d / f"{creds_of}.key").read_bytes(),
        middleware=middleware,
    )  # fmt: skip


def test_outsiders_are_refused_and_the_node_keeps_serving(
    secure: SecurePair,
    other_pki: StorePKI,
) -> None:
    b = secure.reps["ws-b"]
    data_b = secure.tmp / "ws-b"
    before, kpi_before = snapshot(data_b), kpis(data_b)
    opts = flight.FlightCallOptions(timeout=5)
    # no certificate at all, plain text and TLS: the handshake fails, no call is made
    sid0 = sorted(b.live_catalog())[0]
    calls = [
        lambda c: list(c.do_action(flight.Action("catalog", b""), options=opts)),
        lambda c: c.do_get(flight.Ticket(sid0.encode()), options=opts).read_all(),
        lambda c: _push_opts(c, sid0, b"x", None, opts),
    ]
    for client in (
        flight.FlightClient(f"grpc://127.0.0.1:{secure.ports['ws-b']}"),
        flight.FlightClient(secure.url("ws-b"), tls_root_certs=(secure.pki.path / "ca.crt").read_bytes()),
        tls_client(secure, "ws-a", [], other_pki.path),  # a certificate of another CA (same store and node names)
    ):
        for call in calls:
            t0 = time.monotonic()
            with pytest.raises(flight.FlightUnavailableError, match=HANDSHAKE_FAILED):
                call(client)
            assert time.monotonic() - t0 < 4.0  # a failed handshake, not the call's timeout
        client.close()
    assert b.refusal_counts() == {}  # no call reached the service
    # the witness's certificate passes TLS, but it is not a node: no header, its own header, a node's forged header
    attempts = [
        ([], "without headers"),
        ([_Headers(forged_headers(secure.pki, WITNESS, WITNESS, WITNESS))], "as itself"),
        ([_Headers(forged_headers(secure.pki, "ws-a", WITNESS, "ws-a"))], "with ws-a's certificate, forged"),
    ]
    for middleware, _what in attempts:
        client = tls_client(secure, WITNESS, middleware)
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(client.do_action(flight.Action("catalog", b""), options=opts))
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(flight.Ticket(sorted(b.live_catalog())[0].encode()), options=opts).read_all()
        client.close()
    assert b.refusal_counts()["auth"] == 2 * len(attempts)
    # a node's certificate is accepted only with its own key's signature
    client = tls_client(secure, "ws-a", [_Headers(forged_headers(secure.pki, "ws-a", "ws-b", "ws-a"))])
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.do_get(flight.Ticket(sorted(b.live_catalog())[0].encode()), options=opts).read_all()
    assert b.refusal_counts()["auth"] == 7
    # the node keeps serving its peer, and nothing changed
    good = node_client(secure)
    assert catalog(good) == secure.reps["ws-a"].live_catalog()
    assert snapshot(data_b) == before and kpis(data_b) == kpi_before
    assert verify_data_dir(data_b, secure.pki.identity("ws-b").verifier()).passed


def _signed(pki: StorePKI, sid: str, data: bytes, node: str = "ws-a") -> bytes:
    return pki.identity(node).signer().sign(sid, hashlib.sha256(data).hexdigest())


def _segment(scratch: Path, pki: StorePKI | None, i: int, *, token: int = 5, k: int = K, end: float | None = None,
             schema_version: str | None = None) -> tuple[str, bytes]:  # fmt: skip
    ws = DEFAULT_BASE + i
    sid = f"cam-1.{round(ws * 1000)}.ws-a.{token}"
    events = window_events("cam-1", DEFAULT_BASE, i, k, 7)
    table = events_to_table(events, store_id="s1", node="ws-a", token=token, config_version="c", model_version="m",
                            segment_id=sid)  # fmt: skip
    meta = SegmentMeta(sid, "s1", "cam-1", ws, end or ws + 1, 10, "ws-a", token, k, "c", "m", TZ)
    table = with_segment_meta(table, meta)
    if schema_version:
        md = dict(table.schema.metadata)
        md[b"edgepair.schema_version"] = schema_version.encode()
        table = table.replace_schema_metadata(md)
    return sid, _to_parquet_bytes(table)


def _forged_compacted(secure: SecurePair, node: str = "ws-a") -> tuple[str, bytes]:
    """An hour file claiming ws-a's windows 0..N under token 5, with ten times the events of the real segments."""
    ws0 = DEFAULT_BASE
    sources = [(f"cam-1.{round((ws0 + i) * 1000)}.ws-a.5", i) for i in range(N)]
    rows = []
    for sid, i in sources:
        t = events_to_table(window_events("cam-1", ws0, i, K * 10, 9), store_id="s1", node="ws-a", token=5,
                            config_version="c", model_version="m", segment_id=sid)  # fmt: skip
        rows.append(t)
    table = pa.concat_tables(rows)
    cid = f"cam-1.{round(ws0 * 1000)}.hour~{'ab' * 8}"
    meta = SegmentMeta(cid, "s1", "cam-1", ws0, ws0 + N, 10 * N, node, 5, table.num_rows, "compacted", "compacted",
                       TZ)  # fmt: skip
    table = with_segment_meta(table, meta)
    table = table.replace_schema_metadata(
        {**table.schema.metadata, **runs_to_kv([Run(ws0, ws0 + N, "ws-a", 5, 10 * N)], [])}
    )
    return cid, _to_parquet_bytes(table)


def test_a_node_pushing_impossible_files_is_refused_each_time(
    secure: SecurePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = secure.reps["ws-b"]
    data_b = secure.tmp / "ws-b"
    before, kpi_before = snapshot(data_b), kpis(data_b)
    client = node_client(secure)
    real = sorted(b.live_catalog())[3]
    scratch = secure.tmp / "scratch"
    _, overwrite = _segment(scratch, secure.pki, 3, k=5)  # same id as a held file, other events
    sid_huge, huge = _segment(scratch, secure.pki, 100, end=1e12)
    sid_future_schema, future_schema = _segment(scratch, secure.pki, 101, schema_version="2")
    sid_token, from_future = _segment(scratch, secure.pki, 102, token=10**15)
    cid, forged = _forged_compacted(secure)
    cid_b, forged_b = _forged_compacted(secure, node="ws-b")
    sid_ok, fine = _segment(scratch, secure.pki, 103)
    attacks: list[tuple[str, str, bytes, bytes | None]] = [
        ("bad_id", "../../../../escape.0.ws-a.5", fine, _signed(secure.pki, sid_ok, fine)),
        ("bad_id", f"../camera=cam-2/{real}", fine, _signed(secure.pki, sid_ok, fine)),
        ("overwrite", real, overwrite, _signed(secure.pki, real, overwrite)),
        ("window", sid_huge, huge, _signed(secure.pki, sid_huge, huge)),
        ("schema", sid_future_schema, future_schema, _signed(secure.pki, sid_future_schema, future_schema)),
        ("token_future", sid_token, from_future, _signed(secure.pki, sid_token, from_future)),
        ("unsigned", sid_ok, fine, None),
        ("signature", sid_ok, fine, _signed(secure.pki, sid_ok, fine, node="ws-b")),  # ws-b signs ws-a's data
        ("compacted_accounting", cid, forged, _signed(secure.pki, cid, forged)),
        ("compactor", cid_b, forged_b, _signed(secure.pki, cid_b, forged_b, node="ws-b")),  # ws-b never compacts
    ]
    for reason, sid, data, sig in attacks:
        with pytest.raises(flight.FlightServerError, match="refused"):
            push(client, sid, data, sig)
        assert b.refusal_counts().get(reason) == 1 + (reason == "bad_id" and sid.startswith("../camera")), reason
        assert not list(secure.tmp.parent.rglob("escape.0.ws-a.5*")), sid
    monkeypatch.setattr(replserver, "MAX_UPLOAD_BYTES", 1 << 20)
    with pytest.raises(flight.FlightServerError, match=r"too_large|passed"):
        push(client, sid_ok, b"x" * (3 << 20), None)
    assert b.refusal_counts()["too_large"] == 1
    assert not list(secure.tmp.parent.rglob("escape*"))  # nowhere: not in data_dir/, not above it
    assert snapshot(data_b) == before and kpis(data_b) == kpi_before
    assert sorted(p.name.split(".")[-2] for p in (data_b / "refused").glob("*.parquet")) == sorted(
        [hashlib.sha256(overwrite).hexdigest()[:12], hashlib.sha256(forged).hexdigest()[:12]]
    )
    # and it still takes a good file from its peer
    push(client, sid_ok, fine, _signed(secure.pki, sid_ok, fine))
    assert sid_ok in b.live_catalog()
    assert verify_data_dir(data_b, secure.pki.identity("ws-b").verifier()).passed


def test_signatures_travel_and_every_copy_verifies(secure: SecurePair) -> None:
    write(secure.tmp / "ws-a", secure.pki.identity("ws-a").signer(), range(N, N + 5))
    a, b = secure.reps["ws-a"], secure.reps["ws-b"]
    wait_for(lambda: len(b.live_catalog()) == N + 5, 30, "anti-entropy of 5 more files", period=0.1)
    verifier = secure.pki.identity("ws-b").verifier()
    for node in ("ws-a", "ws-b"):
        report = verify_data_dir(secure.tmp / node, verifier)
        assert (report.files, report.ok, report.passed) == (N + 5, N + 5, True), report.summary()
    assert b.live_catalog() == a.live_catalog()
    assert b.status()["tls"] and b.refusal_counts() == {}


def test_the_unsigned_release_migrates(tmp_path: Path, pki: StorePKI) -> None:
    """Files written unsigned before the upgrade: each node signs its own at start; the peer takes the signatures."""
    write(tmp_path / "ws-a", None, range(10))
    write(tmp_path / "ws-b", None, range(10))  # the copy ws-b had replicated (same bytes)
    p = SecurePair(tmp_path, pki)
    try:
        p.start("ws-a")
        p.start("ws-b")
        verifier = pki.identity("ws-a").verifier()
        wait_for(lambda: verify_data_dir(tmp_path / "ws-b", verifier).passed, 30, "ws-b to take ws-a's signatures")
        assert verify_data_dir(tmp_path / "ws-a", verifier).ok == 10
    finally:
        for r in p.reps.values():
            r.stop()


def test_plain_text_opt_out_still_replicates(tmp_path: Path) -> None:
    write(tmp_path / "a", None, range(10))
    pa_, pb = free_port(), free_port()
    a = Replicator(tmp_path / "a", "s1", "ws-a", f"grpc+tls://127.0.0.1:{pb}", port=pa_, anti_entropy_s=0.5)
    b = Replicator(tmp_path / "b", "s1", "ws-b", f"grpc://127.0.0.1:{pa_}", port=pb, anti_entropy_s=0.5)
    assert a.peer_url.startswith("grpc://") and a.location.startswith("grpc://")
    a.start()
    b.start()
    try:
        wait_for(lambda: b.live_catalog() == a.live_catalog() and len(a.live_catalog()) == 10, 30, "plain copy")
    finally:
        b.stop()
        a.stop()
    report = verify_data_dir(tmp_path / "b", None)
    assert (report.files, len(report.unsigned), report.passed) == (10, 10, False)
    assert pq.read_table(next((tmp_path / "b" / "events").rglob("*.parquet")), schema=EVENT_SCHEMA).num_rows == K
