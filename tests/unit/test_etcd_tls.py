"""TLS and auth refusals in words: each gRPC failure, as measured against etcd 3.4.23, gets a sentence naming the
endpoint and the fix; failures that are not TLS or auth (a member down, a timeout) get none. That ``explain`` finds
the gRPC error inside pyetcd's own exceptions is tested against a real member in
tests/integration/test_etcd_security.py (test_pyetcds_own_exceptions_carry_the_grpc_refusal_that_explain_words)."""

from __future__ import annotations

import grpc
import pytest

from cluster.pki import CertDir, Identity
from failover.etcd_auth import prefix_range_end, store_prefix
from failover.etcd_tls import explain

EP = "https://127.0.0.1:2379"


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.fixture(scope="module")
def ws_a(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    certs = CertDir(tmp_path_factory.mktemp("pki"))
    certs.init("s1")
    certs.issue("ws-a", "node", ["127.0.0.1"])
    return Identity.load(certs.path, "ws-a")


U = grpc.StatusCode.UNAVAILABLE
UNTRUSTED_CLIENT = (
    "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:2379:"
    " Unwrap failed (TSI_DATA_CORRUPTED)"
)
UNTRUSTED_SERVER = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:2379: Tls handshake failed"
    " (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED"
)
CLOSED = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:2379: Socket closed"
REFUSED = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:2379: Connection refused"


@pytest.mark.parametrize(
    ("tls", "code", "details", "expected"),
    [
        (True, U, UNTRUSTED_CLIENT, f"certificate not trusted by etcd at {EP}: it ended the TLS handshake"),
        (True, U, UNTRUSTED_SERVER, f"etcd at {EP} presented a certificate not trusted by"),
        (False, U, CLOSED, f"etcd at {EP} closed the connection of a plain-text client"),
        (True, grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", f"etcd at {EP} denied user 'ws-a'"),
        (True, grpc.StatusCode.UNKNOWN, "auth: permission denied", f"etcd at {EP} denied user 'ws-a'"),
        (
            True,
            grpc.StatusCode.FAILED_PRECONDITION,
            "etcdserver: user name not found",
            f"etcd at {EP} knows no user 'ws-a'",
        ),
        (True, U, REFUSED, None),
        (False, U, REFUSED, None),
        (True, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", None),
    ],
)
def test_explain(ws_a: Identity, tls: bool, code: grpc.StatusCode, details: str, expected: str | None) -> None:
    said = explain(FakeRpcError(code, details), EP, ws_a if tls else None)
    if expected is None:
        assert said is None
    else:
        assert said is not None and said.startswith(expected), said
        assert "security." in said or "enable_auth" in said, "every sentence says what to fix"


@pytest.mark.parametrize(
    ("store", "prefix", "end"),
    [("s1", "/edgepair/s1/", "/edgepair/s10"), ("drill", "/edgepair/drill/", "/edgepair/drill0")],
)
def test_store_prefix_and_range_end(store: str, prefix: str, end: str) -> None:
    assert store_prefix(store) == prefix
    assert prefix_range_end(prefix) == end
