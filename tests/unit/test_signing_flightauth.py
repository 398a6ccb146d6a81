"""Who may call a node's Flight service: the signed call header, table-tested on a fake clock (no Flight)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow.flight as flight
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cluster.pki import CertDir
from storage.bounds import Refused
from storage.flightauth import (
    H_CERT,
    H_NODE,
    H_SIG,
    H_TIME,
    MAX_SKEW_S,
    AuthMiddlewareFactory,
    CallAuthenticator,
    CallSigner,
    NodeProver,
    call_message,
    check_proof,
    new_nonce,
    server_kwargs,
    with_scheme,
)
from tests.pki_helpers import WITNESS, StorePKI, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> StorePKI:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def other_pki(tmp_path: Path) -> StorePKI:
    """Another CA with certificates of the same store and names: what an attacker with their own CA holds."""
    return make_pki(tmp_path / "other-pki")


T = 1_800_000_000.0


def headers_of(p: StorePKI, name: str, t: float = T) -> dict[str, list[str]]:
    return {k: [v] for k, v in CallSigner(p.identity(name), clock=lambda: t).headers().items()}


def forged(p: StorePKI, claimed: str, key_of: str, cert_of: str, t: float = T) -> dict[str, list[str]]:
    key = serialization.load_pem_private_key((p.path / f"{key_of}.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    sig = key.sign(call_message(p.store, claimed, int(t)), ec.ECDSA(hashes.SHA256()))
    cert = base64.b64encode((p.path / f"{cert_of}.crt").read_bytes()).decode()
    return {H_NODE: [claimed], H_TIME: [str(int(t))], H_CERT: [cert], H_SIG: [base64.b64encode(sig).decode()]}


CASES: list[tuple[str, Callable[[StorePKI, StorePKI], dict[str, list[str]]], str | None]] = [
    ("node ws-a", lambda p, o: headers_of(p, "ws-a"), None),
    ("node ws-b", lambda p, o: headers_of(p, "ws-b"), None),
    ("no headers", lambda p, o: {}, "exactly one x-edgepair-node"),
    ("witness as itself", lambda p, o: forged(p, WITNESS, WITNESS, WITNESS), "role witness"),
    ("witness with ws-a's certificate", lambda p, o: forged(p, "ws-a", WITNESS, "ws-a"), "does not verify"),
    ("ws-b's key as ws-a", lambda p, o: forged(p, "ws-a", "ws-b", "ws-a"), "does not verify"),
    ("ws-a's certificate naming ws-b", lambda p, o: forged(p, "ws-b", "ws-a", "ws-a"), "with the certificate of"),
    ("another CA's ws-a", lambda p, o: headers_of(o, "ws-a"), "not issued by this store's CA"),
    ("too old", lambda p, o: headers_of(p, "ws-a", T - MAX_SKEW_S - 1), "not within"),
    ("from the future", lambda p, o: headers_of(p, "ws-a", T + MAX_SKEW_S + 1), "not within"),
    ("two node headers", lambda p, o: {**headers_of(p, "ws-a"), H_NODE: ["ws-a", "ws-b"]}, "exactly one"),
    ("garbage signature", lambda p, o: {**headers_of(p, "ws-a"), H_SIG: ["!!"]}, "malformed"),
]


@pytest.mark.parametrize(("what", "make", "refusal"), CASES, ids=[c[0] for c in CASES])
def test_only_a_node_of_the_store_with_its_own_key_is_let_in(
    pki: StorePKI,
    other_pki: StorePKI,
    what: str,
    make: Callable[[StorePKI, StorePKI], dict[str, list[str]]],
    refusal: str | None,
) -> None:
    auth = CallAuthenticator(pki.identity("ws-b").verifier(), clock=lambda: T)
    hdrs = make(pki, other_pki)
    if refusal is None:
        assert auth.check(hdrs) == hdrs[H_NODE][0]
        assert auth.check(hdrs) == hdrs[H_NODE][0]  # cached
    else:
        with pytest.raises(Refused, match=refusal) as caught:
            auth.check(hdrs)
        assert caught.value.reason == "auth"


def test_the_client_signs_again_only_every_30_seconds(pki: StorePKI) -> None:
    now = [T]
    signer = CallSigner(pki.identity("ws-a"), clock=lambda: now[0])
    first = signer.headers()
    now[0] += 29
    assert signer.headers() == first
    now[0] += 1
    assert signer.headers()[H_TIME] == str(int(T + 30))


def test_a_witness_cannot_make_call_headers(pki: StorePKI) -> None:
    with pytest.raises(ValueError, match="role witness"):
        CallSigner(pki.identity(WITNESS))


@pytest.mark.parametrize(
    ("url", "tls", "want"),
    [
        ("grpc://h:1", True, "grpc+tls://h:1"),
        ("grpc+tls://h:1", False, "grpc://h:1"),
        ("h:1", True, "grpc+tls://h:1"),
        ("grpc://10.0.0.2:8815", False, "grpc://10.0.0.2:8815"),
    ],
)
def test_the_scheme_follows_the_identity(url: str, tls: bool, want: str) -> None:
    assert with_scheme(url, tls) == want


def test_a_certificate_must_be_valid_at_the_time_of_the_call(pki: StorePKI) -> None:
    not_after = CertDir(pki.path).show()[1].not_after.timestamp()  # ws-a, issued now for 825 days
    for t, ok in ((T, True), (not_after + 3600, False), (1_600_000_000.0, False)):
        auth = CallAuthenticator(pki.identity("ws-b").connection_verifier(), clock=lambda t=t: t)
        if ok:
            assert auth.check(headers_of(pki, "ws-a", t)) == "ws-a"
        else:
            with pytest.raises(Refused, match="not valid now") as caught:
                auth.check(headers_of(pki, "ws-a", t))
            assert caught.value.reason == "auth"


def test_only_the_pairs_workstations_may_call(pki: StorePKI) -> None:
    CertDir(pki.path).issue("ws-c", "node", ["127.0.0.1"])
    loose = CallAuthenticator(pki.identity("ws-b").connection_verifier(), clock=lambda: T)
    strict = CallAuthenticator(pki.identity("ws-b").connection_verifier(), clock=lambda: T, nodes=("ws-a", "ws-b"))
    assert loose.check(headers_of(pki, "ws-c")) == "ws-c"  # nodes None: any node certificate (today's behaviour)
    assert strict.check(headers_of(pki, "ws-a")) == "ws-a"
    with pytest.raises(Refused, match="ws-c is not a workstation of this store") as caught:
        strict.check(headers_of(pki, "ws-c"))
    assert caught.value.reason == "auth"


def test_the_server_trusts_only_the_current_ca_for_calls(pki: StorePKI, other_pki: StorePKI) -> None:
    """A retired CA verifies old data, never a live caller: server_kwargs builds its authenticator accordingly."""
    shutil.copy(other_pki.path / "ca.crt", pki.path / "ca-retired.crt")
    ident = pki.identity("ws-b")
    assert ident.retired_ca is not None and len(ident.verifier().cas) == 2
    kw = server_kwargs(ident, lambda reason, text: None, nodes=("ws-a", "ws-b"))
    auth = kw["middleware"]["edgepair-auth"].auth
    auth._clock = lambda: T
    assert auth.check(headers_of(pki, "ws-a")) == "ws-a"
    with pytest.raises(Refused, match="not issued by this store's CA"):
        auth.check(headers_of(other_pki, "ws-a"))  # a certificate of the retired CA


def test_an_unexpected_error_in_the_check_is_a_counted_refusal(pki: StorePKI) -> None:
    auth = CallAuthenticator(pki.identity("ws-b").connection_verifier(), clock=lambda: T)
    seen: list[tuple[str, str]] = []
    factory = AuthMiddlewareFactory(auth, lambda reason, text: seen.append((reason, text)))

    def boom(headers: object) -> str:
        raise RecursionError("/srv/secret/path")

    auth.check = boom  # type: ignore[method-assign]
    with pytest.raises(flight.FlightUnauthenticatedError) as caught:
        factory.start_call(None, headers_of(pki, "ws-a"))
    assert "secret" not in str(caught.value)
    assert seen == [("auth", "unexpected RecursionError checking the call headers")]


@pytest.mark.parametrize(
    ("expected", "tamper", "refusal"),
    [
        ("ws-b", None, None),
        ("ws-a", None, "proves to be 'ws-b'"),
        ("ws-b", "nonce", "does not verify"),
        ("ws-b", "nested", "malformed"),
        ("ws-b", "witness-cert", "role witness"),
    ],
)
def test_the_server_proves_it_is_the_peer_node(pki: StorePKI, expected: str, tamper: str | None,
                                               refusal: str | None) -> None:  # fmt: skip
    nonce = new_nonce()
    proof = NodeProver(pki.identity("ws-b")).prove(nonce)
    if tamper == "nonce":
        nonce = new_nonce()
    elif tamper == "nested":
        proof = b"[" * 8000
    elif tamper == "witness-cert":
        doc = json.loads(proof)
        doc["cert"] = (pki.path / f"{WITNESS}.crt").read_text()
        proof = json.dumps(doc).encode()
    verifier = pki.identity("ws-a").verifier()
    if refusal is None:
        assert check_proof(verifier, proof, nonce, expected, ("ws-a", "ws-b"), T) == "ws-b"
    else:
        with pytest.raises(Refused, match=refusal) as caught:
            check_proof(verifier, proof, nonce, expected, ("ws-a", "ws-b"), T)
        assert caught.value.reason == "peer_identity"
    with pytest.raises(Refused, match="not a workstation"):  # a node of the store CA outside the pair
        check_proof(verifier, NodeProver(pki.identity("ws-b")).prove(nonce), nonce, "ws-b", ("ws-a", "ws-c"), T)
