"""TLS for every etcd client of edgepair: endpoints, gRPC channels, and TLS/auth failures in words.

Rules:

- An endpoint is written ``host:port``, ``http://host:port`` or ``https://host:port``. With an identity (a host's
  certificate of the store CA, :class:`cluster.pki.Identity`) every call uses TLS: it presents that certificate and
  trusts only the store's CA bundle; the server's certificate must name the host dialled (so the certificates of a
  local pair name 127.0.0.1). Without an identity calls are plain text.
- ``http://`` with an identity, or ``https://`` without one, is a configuration error raised as ``DCSError``
  naming the endpoint and the fix: never a silent downgrade to plain text.
- :func:`explain` turns a failed call into one sentence that names the endpoint and what to fix (an untrusted
  server or client certificate, plain text against a TLS member, a user etcd does not know, a permission denied).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster.errors import DCSError

if TYPE_CHECKING:
    import grpc

    from cluster.pki import Identity


@dataclass(frozen=True)
class Target:
    """One etcd member as a client dials it."""

    host: str
    port: int
    secure: bool

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.netloc}"


def parse_endpoint(endpoint: str, identity: Identity | None = None) -> Target:
    """The member an endpoint names, secure exactly when an identity is given (see the module rules)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        scheme, rest = "", endpoint
    text = rest.rstrip("/")
    host, sep, port = text.rpartition(":")
    if scheme not in ("", "http", "https") or not sep or not host or not port.isdigit():
        raise DCSError(f"etcd endpoint must be host:port, http://host:port or https://host:port, got {endpoint!r}")
    if identity is not None and scheme == "http":
        raise DCSError(
            f"etcd endpoint {endpoint} is plain text but TLS is on (a certificate was given):"
            " write it https://host:port in cluster.etcd_endpoints, or set security.tls: false"
        )
    if identity is None and scheme == "https":
        raise DCSError(
            f"etcd endpoint {endpoint} needs TLS but no certificate was given:"
            " set security.tls: true and security.cert_dir to this host's certificate folder"
        )
    return Target(host, int(port), identity is not None)


def credentials(identity: Identity) -> grpc.ChannelCredentials:
    """gRPC channel credentials: the store's CA bundle as the only trust, this host's certificate and key."""
    import grpc

    ca, cert, key = identity.pem()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def open_channel(endpoint: str, identity: Identity | None = None) -> grpc.Channel:
    """A gRPC channel to one member: TLS with ``identity``, plain text without."""
    import grpc

    target = parse_endpoint(endpoint, identity)
    if identity is None:
        return grpc.insecure_channel(target.netloc)
    return grpc.secure_channel(target.netloc, credentials(identity))


def member_status(endpoint: str, identity: Identity | None = None, timeout: float = 0.5) -> Any:
    """The member's maintenance Status response; raises ``grpc.RpcError`` (or DCSError for a bad endpoint)."""
    from pyetcd import etcdrpc

    channel = open_channel(endpoint, identity)
    try:
        return etcdrpc.MaintenanceStub(channel).Status(etcdrpc.StatusRequest(), timeout)
    finally:
        channel.close()


def _rpc_error(exc: BaseException) -> Any:
    """The ``grpc.RpcError`` behind ``exc`` (pyetcd re-raises some as its own exceptions, details dropped)."""
    import grpc

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, grpc.RpcError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe(exc: BaseException) -> str:
    """``CODE details`` of a gRPC failure, or the exception's text."""
    rpc = _rpc_error(exc)
    if rpc is not None:
        code = rpc.code() if hasattr(rpc, "code") else None
        details = rpc.details() if hasattr(rpc, "details") else ""
        return f"{getattr(code, 'name', code)} {details or ''}".strip()
    return str(exc) or type(exc).__name__


# gRPC's wording of TLS failures, as measured with grpcio 1.85 against etcd 3.4.23: a server certificate we do not
# trust fails our handshake ("Tls handshake failed ... CERTIFICATE_VERIFY_FAILED"); a client certificate etcd does
# not trust (or none) makes etcd abort the handshake ("Unwrap failed (TSI_DATA_CORRUPTED)"); a plain-text client of a
# TLS member sees the connection closed ("Socket closed").
_SERVER_UNTRUSTED = ("certificate_verify_failed", "certificate verify failed", "unknown ca", "self signed")
_HANDSHAKE = ("handshake", "tsi_", "unwrap failed", "ssl_error", "bad certificate", "certificate required")
_USER_UNKNOWN = ("user name not found", "user not found", "invalid user id")


def explain(exc: BaseException, endpoint: str, identity: Identity | None = None) -> str | None:
    """One sentence naming the endpoint and the fix when ``exc`` is a TLS or auth refusal; None for anything else
    (a member down, a timeout: the caller's own wording fits those)."""
    rpc = _rpc_error(exc)
    if rpc is None:
        return None
    code = getattr(rpc.code(), "name", "") if hasattr(rpc, "code") else ""
    details = (rpc.details() if hasattr(rpc, "details") else "") or ""
    low = details.lower()
    who = f"user {identity.name!r}" if identity is not None else "this client"
    if any(w in low for w in _USER_UNKNOWN):
        return (
            f"etcd at {endpoint} knows no {who} ({details}): only the store's workstations and root are etcd"
            " users; use a workstation's certificate (security.cert_dir), not the witness's"
        )
    if code == "PERMISSION_DENIED" or "permission denied" in low:
        return (
            f"etcd at {endpoint} denied {who} ({details}): a workstation may read and write its store's prefix"
            " only; check store.id and security.cert_dir, or bootstrap auth again (failover.etcd_auth.enable_auth)"
        )
    if code != "UNAVAILABLE":
        return None
    if identity is None:
        if "socket closed" in low or any(w in low for w in _HANDSHAKE):
            return (
                f"etcd at {endpoint} closed the connection of a plain-text client ({details}): if its members"
                " require TLS, set security.tls: true and security.cert_dir"
            )
        return None
    if any(w in low for w in _SERVER_UNTRUSTED):
        return (
            f"etcd at {endpoint} presented a certificate not trusted by {identity.ca} or not naming the host dialled"
            f" ({details}): check security.cert_dir (ca.crt) and the member's certificate"
        )
    if any(w in low for w in _HANDSHAKE):
        return (
            f"certificate not trusted by etcd at {endpoint}: it ended the TLS handshake ({details}); check"
            f" security.cert_dir: {identity.cert} must be issued by the CA that etcd trusts"
        )
    return None
