"""Who may call a node's Flight service: mutual TLS, and a signed header naming a *node* of the store.

Rules:

- With an identity, the server listens on ``grpc+tls://`` with the node's certificate, requires a client certificate
  issued by the store CA (``verify_client``), and the client trusts only the store CA and presents its own
  certificate. A client with no certificate, or one of another CA, fails the handshake: no call is ever made.
- pyarrow's Flight server cannot tell a handler which certificate the client presented, and every host of the store
  (witness, admin) holds one. So every call also carries headers :data:`H_NODE`, :data:`H_TIME`, :data:`H_CERT`
  (the caller's node certificate, base64 PEM) and :data:`H_SIG`: an ECDSA signature by the node's key of
  ``edgepair-flight-v1|<store>|<node>|<unix seconds>``. :class:`CallAuthenticator` accepts a call only if the
  certificate is a *node* certificate of the store's *current* CA bundle (:meth:`cluster.pki.Identity.
  connection_verifier`: a retired CA authorises no connection), valid at the time of the call (an expired or
  not-yet-valid certificate is refused), of one of the store's configured workstations (``nodes``; None: any node
  certificate, for tests), names the node of the header, the time is within :data:`MAX_SKEW_S` of the server's clock
  and the signature verifies. A witness or admin certificate, an expired one, one of a host outside the pair, a forged
  or stale signature, or no headers: refused (``auth``), counted, and the call fails with
  ``FlightUnauthenticatedError``. The headers travel inside TLS only, so they cannot be replayed by an onlooker.
- The client checks the server too (:func:`check_peer`): TLS proves only a certificate of the store CA (a witness
  has one), so after connecting it calls ``do_action("whoami", nonce)`` and the server answers with its node
  certificate and its signature of ``edgepair-whoami-v1|<store>|<node>|<nonce hex>`` (:class:`NodeProver`); the
  client accepts the peer only if that certificate is valid now, of the configured peer node, and the signature over
  its own fresh nonce verifies.
- Cheap: the client signs once per :data:`RESIGN_S`; the server caches the headers it accepted until they expire.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow.flight as flight
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from storage.bounds import Refused

if TYPE_CHECKING:
    from cluster.pki import Identity, Verifier

log = logging.getLogger(__name__)

H_NODE = "x-edgepair-node"
H_TIME = "x-edgepair-time"
H_CERT = "x-edgepair-cert"
H_SIG = "x-edgepair-sig"
MAX_SKEW_S = 120
RESIGN_S = 30
_MAX_HEADER = 8192
_CACHE_MAX = 4096


def call_message(store_id: str, node: str, t: int) -> bytes:
    return f"edgepair-flight-v1|{store_id}|{node}|{t}".encode()


class CallSigner:
    """The client side: the auth headers of this node, signed again every :data:`RESIGN_S` seconds."""

    def __init__(self, identity: Identity, clock: Callable[[], float] = time.time) -> None:
        if identity.role != "node":
            raise ValueError(f"only a node calls a node's Flight service; {identity.cert} has role {identity.role}")
        key = serialization.load_pem_private_key(identity.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{identity.key} is not an ECDSA key")
        self._key = key
        self.identity = identity
        self._cert_b64 = base64.b64encode(identity.cert.read_bytes()).decode()
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[int, dict[str, str]] | None = None

    def headers(self) -> dict[str, str]:
        now = int(self._clock())
        with self._lock:
            if self._cached is None or not 0 <= now - self._cached[0] < RESIGN_S:
                msg = call_message(self.identity.store_id, self.identity.name, now)
                sig = self._key.sign(msg, ec.ECDSA(hashes.SHA256()))
                hdrs = {H_NODE: self.identity.name, H_TIME: str(now), H_CERT: self._cert_b64}
                hdrs[H_SIG] = base64.b64encode(sig).decode()
                self._cached = (now, hdrs)
            return dict(self._cached[1])


def _one(headers: Mapping[str, Any], name: str) -> str:
    values = headers.get(name) or []
    if len(values) != 1:
        raise Refused("auth", f"call without exactly one {name} header: not a node of this store")
    value = values[0]
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    if len(text) > _MAX_HEADER:
        raise Refused("auth", f"header {name} of {len(text)} characters")
    return text


class CallAuthenticator:
    """The server side: :meth:`check` returns the calling node's name or raises Refused(``auth``). Thread-safe."""

    def __init__(
        self,
        verifier: Verifier,
        clock: Callable[[], float] = time.time,
        skew_s: float = MAX_SKEW_S,
        nodes: Collection[str] | None = None,
    ) -> None:
        self.verifier = verifier
        self.nodes = frozenset(nodes) if nodes is not None else None
        self.store_id = verifier.store_id
        self._clock = clock
        self.skew_s = skew_s
        self._ok: dict[tuple[str, str, str, str], float] = {}
        self._lock = threading.Lock()

    def check(self, headers: Mapping[str, Any]) -> str:
        from cluster.pki import PKIError

        node, t_text, cert_b64, sig_b64 = (_one(headers, h) for h in (H_NODE, H_TIME, H_CERT, H_SIG))
        now = self._clock()
        if not t_text.isdigit() or len(t_text) > 12 or abs(now - int(t_text)) > self.skew_s:
            raise Refused("auth", f"call of {node[:64]!r} signed at {t_text[:20]!r}, not within {self.skew_s:.0f} s")
        key = (node, t_text, cert_b64, sig_b64)
        with self._lock:
            if self._ok.get(key, 0.0) > now:
                return node
        try:
            cert_pem = base64.b64decode(cert_b64, validate=True).decode()
            sig = base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Refused("auth", f"call of {node[:64]!r}: malformed auth headers ({exc})") from None
        try:
            name, pub = self.verifier.signer_of(cert_pem, at=now, allowed=self.nodes)
        except PKIError as exc:
            raise Refused("auth", f"call of {node[:64]!r} refused: {exc}") from None
        if name != node:
            raise Refused("auth", f"call says node {node[:64]!r} with the certificate of {name!r}")
        try:
            pub.verify(sig, call_message(self.store_id, node, int(t_text)), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Refused("auth", f"call of {node!r}: its signature does not verify") from None
        with self._lock:
            if len(self._ok) >= _CACHE_MAX:
                self._ok = {k: exp for k, exp in self._ok.items() if exp > now}
                if len(self._ok) >= _CACHE_MAX:
                    self._ok.clear()
            self._ok[key] = min(int(t_text) + self.skew_s, _not_after(cert_pem))  # never past the certificate
        return node


def _not_after(cert_pem: str) -> float:
    return x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc.timestamp()


class AuthMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Refuses every call that :class:`CallAuthenticator` refuses, reporting it to ``on_refusal(reason, text)``."""

    def __init__(self, auth: CallAuthenticator, on_refusal: Callable[[str, str], None]) -> None:
        super().__init__()
        self.auth = auth
        self.on_refusal = on_refusal

    def start_call(self, info: Any, headers: Mapping[str, Any]) -> None:
        try:
            self.auth.check(headers)
        except Refused as exc:
            self.on_refusal(exc.reason, str(exc))
            raise flight.FlightUnauthenticatedError(f"refused: {exc}") from None
        except Exception as exc:  # never a traceback to the caller: refused, the detail logged here
            log.exception("flight call authentication failed unexpectedly")
            self.on_refusal("auth", f"unexpected {type(exc).__name__} checking the call headers")
            raise flight.FlightUnauthenticatedError("refused: call headers not checkable") from None
        return None


class _ClientAuth(flight.ClientMiddleware):  # type: ignore[misc]
    def __init__(self, signer: CallSigner) -> None:
        super().__init__()
        self.signer = signer

    def sending_headers(self) -> dict[str, str]:
        return self.signer.headers()


class ClientAuthFactory(flight.ClientMiddlewareFactory):  # type: ignore[misc]
    def __init__(self, signer: CallSigner) -> None:
        super().__init__()
        self.signer = signer

    def start_call(self, info: Any) -> _ClientAuth:
        return _ClientAuth(self.signer)


def with_scheme(url: str, tls: bool) -> str:
    """``url`` with the scheme the identity calls for: ``grpc+tls://`` with TLS, ``grpc://`` without."""
    rest = url.split("://", 1)[1] if "://" in url else url
    return f"{'grpc+tls' if tls else 'grpc'}://{rest}"


def server_kwargs(
    identity: Identity | None, on_refusal: Callable[[str, str], None], nodes: Collection[str] | None = None
) -> dict[str, Any]:
    """The FlightServerBase arguments for ``identity`` (none: plain text, the opt-out); ``nodes``: the pair."""
    if identity is None:
        return {}
    ca, cert, key = identity.pem()
    auth = CallAuthenticator(identity.connection_verifier(), nodes=nodes)
    return {
        "tls_certificates": [(cert, key)],
        "verify_client": True,
        "root_certificates": ca,
        "middleware": {"edgepair-auth": AuthMiddlewareFactory(auth, on_refusal)},
    }


def client_kwargs(identity: Identity | None) -> dict[str, Any]:
    """The FlightClient arguments for ``identity``: the store CA, this node's certificate and key, signed headers."""
    if identity is None:
        return {}
    ca, cert, key = identity.pem()
    return {
        "tls_root_certs": ca,
        "cert_chain": cert,
        "private_key": key,
        "middleware": [ClientAuthFactory(CallSigner(identity))],
    }


# --- the server proves it is a node: whoami ----------------------------------------------------------------------

WHOAMI = "whoami"
NONCE_BYTES = 32
_MAX_PROOF = 16384


def whoami_message(store_id: str, node: str, nonce: bytes) -> bytes:
    return f"edgepair-whoami-v1|{store_id}|{node}|{nonce.hex()}".encode()


class NodeProver:
    """The server side of ``whoami``: its node certificate and its signature over the client's nonce (JSON)."""

    def __init__(self, identity: Identity) -> None:
        self._signer = CallSigner(identity)
        self.identity = identity
        self._cert_pem = identity.cert.read_text()

    def prove(self, nonce: bytes) -> bytes:
        if not 16 <= len(nonce) <= 64:
            raise Refused("bad_request", f"whoami nonce of {len(nonce)} bytes (16..64)")
        msg = whoami_message(self.identity.store_id, self.identity.name, nonce)
        sig = self._signer._key.sign(msg, ec.ECDSA(hashes.SHA256()))
        doc = {"node": self.identity.name, "cert": self._cert_pem, "sig": base64.b64encode(sig).decode()}
        return json.dumps(doc).encode()


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def check_proof(verifier: Verifier, proof: bytes, nonce: bytes, expected: str, nodes: Collection[str] | None,
                now: float) -> str:  # fmt: skip
    """The peer's node name if ``proof`` (a ``whoami`` answer) proves it is ``expected``, a workstation of ``nodes``
    with a certificate valid at ``now``, holding the key that signed ``nonce``; Refused(``peer_identity``) if not."""
    from cluster.pki import PKIError

    try:
        if len(proof) > _MAX_PROOF:
            raise ValueError(f"{len(proof)} bytes")
        doc = json.loads(proof)
        name, cert_pem = str(doc["node"]), str(doc["cert"])
        sig = base64.b64decode(str(doc["sig"]), validate=True)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise Refused("peer_identity", f"the peer's whoami answer is malformed ({type(exc).__name__})") from None
    try:
        signer, pub = verifier.signer_of(cert_pem, at=now, allowed=nodes)
    except PKIError as exc:
        raise Refused("peer_identity", f"the peer is not a workstation of this store: {exc}") from None
    if signer != expected or name != expected:
        raise Refused("peer_identity", f"the peer proves to be {signer!r} (says {name[:64]!r}), not {expected!r}")
    try:
        pub.verify(sig, whoami_message(verifier.store_id, signer, nonce), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Refused("peer_identity", f"the peer's whoami signature of {signer} does not verify") from None
    return signer
