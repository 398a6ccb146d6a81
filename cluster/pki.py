"""The store's own PKI: one CA per store, one certificate per host, and segment signatures.

Rules:

- One CA per store (ECDSA P-256, 10 years). It signs one certificate per workstation (role ``node``), per witness
  (role ``witness``) and for the operator's admin client (role ``admin``, common name ``root``: etcd's root user).
  Each certificate names its store, role and host in a URI SAN, ``edgepair://<store>/<role>/<name>``, and its common
  name is the host's name (etcd takes it as the user name of a client certificate).
- Files in a certificate folder: ``ca.crt`` (the trust bundle: one CA, or two while the CA is being rotated),
  ``ca.key`` (only where certificates are made: the controller, or a local pair's run dir), ``<name>.crt`` and
  ``<name>.key``. Every key is created mode 0600 from the start (``os.open`` with the mode), never chmod-ed after.
- A node signs the sha256 of every file it writes with its own key; a *signature document* (JSON, see
  :class:`Signer`) carries the signer's certificate, so that a verifier needs only the store's CA bundle. A
  signature is valid when the certificate was issued by a CA of the bundle (or a retired CA of the store, kept in
  ``ca-retired.crt`` so that data signed before a CA rotation still verifies), names this store and the role
  ``node``, and its key signed ``edgepair-file-v1|<store>|<file id>|<sha256>``. Expiry is not checked there: data
  signed while a certificate was valid stays valid (the TLS handshake checks expiry of live connections).
- Rotation of a host certificate: ``rotate`` writes a new key and certificate from the same CA; both the old and the
  new one are valid until the old one expires, so the hosts restart one at a time (etcd reads its files at every
  handshake; the node agent reads them at start). Rotation of the CA: ``rotate-ca`` adds a new CA to the bundle and
  re-issues every host certificate found from it; once every host runs with the new files, ``rotate-ca --finish``
  drops the old CA from the bundle (it moves to ``ca-retired.crt``, trusted for old signatures only).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.errors import EdgepairError

ROLES = ("node", "witness", "admin")
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_RETIRED = "ca-retired.crt"
CA_NEXT_KEY = "ca.next.key"
ADMIN_NAME = "root"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
SIG_VERSION = 1
SIG_ALG = "ecdsa-p256-sha256"
MAX_SIG_BYTES = 8192
CA_DAYS = 3650
HOST_DAYS = 825


class PKIError(EdgepairError):
    """A certificate or key is missing, unreadable, of another store, or a signature does not verify."""

    exit_code = 2


# --- small helpers -------------------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` created with ``mode`` from the start (temp + fsync + rename, never chmod after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise PKIError(f"key {path} not found: issue it with `edgepair certs issue`") from None
    except (OSError, ValueError, TypeError) as exc:
        raise PKIError(f"key {path} is unreadable or not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"key {path} is not an ECDSA key: issue it again with `edgepair certs issue`")
    return key


def load_certs(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a bundle), or PKIError naming the file."""
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        raise PKIError(f"certificate {path} not found: make it with `edgepair certs init/issue`") from None
    except (OSError, ValueError) as exc:
        raise PKIError(f"certificate file {path} is unreadable or not PEM: {exc}") from None
    return certs


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _san_uri(store_id: str, role: str, name: str) -> str:
    return f"edgepair://{store_id}/{role}/{name}"


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says about itself, as ``certs show`` prints it."""

    name: str
    store: str | None
    role: str | None
    hosts: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    is_ca: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "store": self.store,
            "role": self.role,
            "hosts": list(self.hosts),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": (self.not_after - _now()).days,
            "fingerprint": self.fingerprint,
            "ca": self.is_ca,
        }


def cert_info(cert: x509.Certificate) -> CertInfo:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cn[0].value) if cn else ""
    store = role = None
    hosts: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            m = re.match(r"^edgepair://([^/]+)/([^/]+)/([^/]+)$", uri)
            if m:
                store, role = m.group(1), m.group(2)
        hosts = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        hosts += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    try:
        is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        o = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        store = str(o[0].value) if o else None
    return CertInfo(
        name=name,
        store=store,
        role=role,
        hosts=tuple(hosts),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint(cert),
        is_ca=is_ca,
    )


# --- making certificates -------------------------------------------------------------------------------------------


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures only (ECDSA keys encipher nothing); a CA also signs certificates and revocation lists."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(store_id: str, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"edgepair store CA {store_id} {_now():%Y-%m-%d}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, store_id),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(ca=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PKIError(f"certificate name {name!r} must match [A-Za-z0-9][A-Za-z0-9_-]* (a host name of the store)")
    return name


def _host_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not HOST_RE.match(host):
        raise PKIError(f"host {host!r} is neither an IP address nor a DNS name: fix --host")
    return x509.DNSName(host)


class CertDir:
    """A folder of the store's certificates (see the module rules). Methods make, rotate and read them."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def cert_path(self, name: str) -> Path:
        return self.path / f"{check_name(name)}.crt"

    def key_path(self, name: str) -> Path:
        return self.path / f"{check_name(name)}.key"

    # -- the CA ----------------------------------------------------------------------------------------------------

    def init(self, store_id: str, *, days: int = CA_DAYS) -> CertInfo:
        """Create the store's CA (refuses to replace an existing one: that would orphan every issued certificate)."""
        check_name(store_id)
        if (self.path / CA_KEY).exists() or (self.path / CA_CERT).exists():
            raise PKIError(
                f"{self.path} already holds a CA ({CA_CERT}); use `edgepair certs rotate-ca` to replace it,"
                " or choose another --dir"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        key, cert = _make_ca(store_id, days)
        write_private(self.path / CA_KEY, _key_pem(key))
        write_private(self.path / CA_CERT, _cert_pem(cert), 0o644)
        return cert_info(cert)

    def ca_certs(self) -> list[x509.Certificate]:
        return load_certs(self.path / CA_CERT)

    def store_id(self) -> str:
        stores = {cert_info(c).store for c in self.ca_certs()}
        if len(stores) != 1 or None in stores:
            raise PKIError(f"{self.path / CA_CERT} names stores {sorted(map(str, stores))}: expected exactly one")
        return str(next(iter(stores)))

    def _signing_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The CA that issues now: the newest one of the bundle whose key is here."""
        key = _load_key(self.path / (CA_NEXT_KEY if (self.path / CA_NEXT_KEY).exists() else CA_KEY))
        pub = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for cert in self.ca_certs():
            cpub = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if cpub == pub:
                return key, cert
        raise PKIError(f"no certificate in {self.path / CA_CERT} matches the CA key in {self.path}")

    # -- host certificates -----------------------------------------------------------------------------------------

    def issue(self, name: str, role: str, hosts: Sequence[str] = (), *, days: int = HOST_DAYS) -> CertInfo:
        """Issue ``<name>.crt``/``<name>.key`` for a host of the store (a new key every time)."""
        check_name(name)
        if role not in ROLES:
            raise PKIError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if role == "admin" and name != ADMIN_NAME:
            raise PKIError(f"the admin certificate is named {ADMIN_NAME!r} (etcd's root user), not {name!r}")
        if role != "admin" and name == ADMIN_NAME:
            raise PKIError(f"{ADMIN_NAME!r} is the admin certificate's name; give the host another name")
        if not 1 <= days <= 3650:
            raise PKIError(f"--days must be between 1 and 3650, got {days}")
        store_id = self.store_id()
        ca_key, ca_cert = self._signing_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(_san_uri(store_id, role, name))]
        names += [_host_entry(h) for h in dict.fromkeys(hosts)]
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, store_id),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                _key_usage(ca=False),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        # The key first: a certificate is never on disk without its key.
        write_private(self.key_path(name), _key_pem(key))
        write_private(self.cert_path(name), _cert_pem(cert), 0o644)
        return cert_info(cert)

    def host_certs(self) -> dict[str, x509.Certificate]:
        """Every ``<name>.crt`` of the folder but the CA's."""
        out = {}
        for p in sorted(self.path.glob("*.crt")):
            if p.name in (CA_CERT, CA_RETIRED):
                continue
            certs = load_certs(p)
            if certs:
                out[p.stem] = certs[0]
        return out

    def rotate(self, name: str, *, days: int = HOST_DAYS) -> CertInfo:
        """A new key and certificate for ``name`` with the same role and hosts, from the issuing CA."""
        old = cert_info(load_certs(self.cert_path(name))[0])
        if old.role not in ROLES:
            raise PKIError(f"{self.cert_path(name)} is not an edgepair host certificate (no role in its SAN)")
        return self.issue(name, old.role, old.hosts, days=days)

    def rotate_ca(self, *, days: int = CA_DAYS) -> list[CertInfo]:
        """Begin a CA rotation: a new CA joins the bundle and re-issues every host certificate of the folder."""
        if (self.path / CA_NEXT_KEY).exists():
            raise PKIError("a CA rotation is already under way: finish it with `edgepair certs rotate-ca --finish`")
        store_id = self.store_id()
        key, cert = _make_ca(store_id, days)
        write_private(self.path / CA_NEXT_KEY, _key_pem(key))
        bundle = b"".join(_cert_pem(c) for c in self.ca_certs()) + _cert_pem(cert)
        write_private(self.path / CA_CERT, bundle, 0o644)
        return [self.rotate(name) for name in self.host_certs()]

    def finish_ca_rotation(self) -> CertInfo:
        """Drop the old CA from the trust bundle (it is kept in ``ca-retired.crt`` for old signatures only)."""
        if not (self.path / CA_NEXT_KEY).exists():
            raise PKIError("no CA rotation is under way (start one with `edgepair certs rotate-ca`)")
        new_key, new_cert = self._signing_ca()
        old = [c for c in self.ca_certs() if fingerprint(c) != fingerprint(new_cert)]
        retired = load_certs(self.path / CA_RETIRED) if (self.path / CA_RETIRED).exists() else []
        write_private(self.path / CA_RETIRED, b"".join(_cert_pem(c) for c in retired + old), 0o644)
        write_private(self.path / CA_CERT, _cert_pem(new_cert), 0o644)
        write_private(self.path / CA_KEY, _key_pem(new_key))
        (self.path / CA_NEXT_KEY).unlink()
        return cert_info(new_cert)

    def show(self) -> list[CertInfo]:
        out = [cert_info(c) for c in self.ca_certs()]
        out += [cert_info(c) for c in self.host_certs().values()]
        return out

    def identity(self, name: str) -> Identity:
        return Identity.load(self.path, name)


# --- a host's identity ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """One host's TLS identity: the store's CA bundle, its certificate and its key (paths, checked at load)."""

    name: str
    store_id: str
    role: str
    ca: Path
    cert: Path
    key: Path
    retired_ca: Path | None = None

    @classmethod
    def load(cls, cert_dir: str | os.PathLike[str], name: str) -> Identity:
        d = Path(cert_dir)
        check_name(name)
        ca, cert, key = d / CA_CERT, d / f"{name}.crt", d / f"{name}.key"
        for p in (ca, cert, key):
            if not p.is_file():
                raise PKIError(
                    f"{p} not found: each host needs {CA_CERT}, {name}.crt and {name}.key in its certificate folder"
                    f" ({d}); make them with `edgepair certs issue {name} --dir DIR`"
                )
        mode = key.stat().st_mode & 0o777
        if mode & 0o077:
            raise PKIError(f"key {key} is readable by others (mode {mode:o}): run `chmod 600 {key}`")
        info = cert_info(load_certs(cert)[0])
        _load_key(key)  # fail now, clearly, rather than in a TLS handshake
        cas = load_certs(ca)
        stores = {cert_info(c).store for c in cas}
        if info.store is None or info.role is None or stores != {info.store}:
            raise PKIError(
                f"{cert} (store {info.store}, role {info.role}) was not issued for the store of {ca}"
                f" ({', '.join(sorted(map(str, stores)))})"
            )
        if info.name != name:
            raise PKIError(f"{cert} is the certificate of {info.name!r}, not of {name!r}")
        issuer_ok = any(_issued_by(load_certs(cert)[0], c) for c in cas)
        if not issuer_ok:
            raise PKIError(f"{cert} was not issued by a CA of {ca}: issue it again from this store's CA")
        retired = d / CA_RETIRED
        return cls(name, info.store, info.role, ca, cert, key, retired if retired.is_file() else None)

    def pem(self) -> tuple[bytes, bytes, bytes]:
        """(CA bundle, certificate, key) as PEM bytes, read now (files rotated on disk are picked up at restart)."""
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()

    def server_ssl_context(self) -> Any:
        """An ``ssl`` server context that requires a client certificate of the store CA (TLS 1.2+)."""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.load_verify_locations(cafile=str(self.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_ssl_context(self) -> Any:
        """An ``ssl`` client context presenting this identity and trusting only the store CA."""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.check_hostname = True
        return ctx

    def signer(self) -> Signer:
        return Signer(self)

    def verifier(self) -> Verifier:
        """Checks signatures on data: the CA bundle and the retired CAs (data signed before a CA rotation)."""
        bundles = [self.ca] + ([self.retired_ca] if self.retired_ca else [])
        return Verifier(self.store_id, bundles)

    def connection_verifier(self) -> Verifier:
        """Checks the certificate of a live caller: the current CA bundle only (a retired CA authorises nothing)."""
        return Verifier(self.store_id, [self.ca])


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- signatures ----------------------------------------------------------------------------------------------------


def _message(store_id: str, file_id: str, sha256: str) -> bytes:
    return f"edgepair-file-v{SIG_VERSION}|{store_id}|{file_id}|{sha256}".encode()


class Signer:
    """Signs files' sha256 with one node's key: :meth:`sign` returns the signature document (bytes, JSON)."""

    def __init__(self, identity: Identity) -> None:
        if identity.role != "node":
            raise PKIError(f"only a workstation (role node) signs data; {identity.cert} has role {identity.role}")
        self.identity = identity
        self._key = _load_key(identity.key)
        self._cert_pem = identity.cert.read_text()
        self.store_id = identity.store_id

    def sign(self, file_id: str, sha256: str) -> bytes:
        sig = self._key.sign(_message(self.store_id, file_id, sha256), ec.ECDSA(hashes.SHA256()))
        doc = {
            "v": SIG_VERSION,
            "alg": SIG_ALG,
            "store": self.store_id,
            "id": file_id,
            "sha256": sha256,
            "signer": self.identity.name,
            "cert": self._cert_pem,
            "sig": base64.b64encode(sig).decode(),
        }
        return json.dumps(doc, separators=(",", ":")).encode()


class Verifier:
    """Checks signature documents against the store's CA bundle(s); thread-safe, caches certificates it checked."""

    def __init__(self, store_id: str, bundles: Iterable[Path]) -> None:
        self.store_id = store_id
        self.cas: list[x509.Certificate] = []
        for b in bundles:
            self.cas.extend(load_certs(Path(b)))
        if not self.cas:
            raise PKIError("no CA certificate to verify signatures with")
        self._ok: dict[str, tuple[str, ec.EllipticCurvePublicKey, float, float]] = {}
        self._lock = threading.Lock()

    def signer_of(
        self, cert_pem: str, *, at: float | None = None, allowed: Collection[str] | None = None
    ) -> tuple[str, ec.EllipticCurvePublicKey]:
        """(node name, public key) of a node certificate of this store, or PKIError saying why not.

        ``at`` (UTC epoch seconds): the certificate must be valid then (a live call: expiry matters; a signature on
        old data: it does not, so data signers pass None). ``allowed``: the node names accepted (the store's
        configured workstations; a certificate of a decommissioned workstation is refused).
        """
        digest = hashlib.sha256(cert_pem.encode()).hexdigest()
        with self._lock:
            hit = self._ok.get(digest)
        if hit is None:
            hit = self._check_cert(cert_pem)
            with self._lock:
                if len(self._ok) > 10_000:
                    self._ok.clear()
                self._ok[digest] = hit
        name, pub, not_before, not_after = hit
        if at is not None and not (not_before <= at <= not_after):
            raise PKIError(f"the certificate of {name} is not valid now (valid {not_before:.0f}..{not_after:.0f})")
        if allowed is not None and name not in allowed:
            raise PKIError(f"{name} is not a workstation of this store (configured: {', '.join(sorted(allowed))})")
        return name, pub

    def _check_cert(self, cert_pem: str) -> tuple[str, ec.EllipticCurvePublicKey, float, float]:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
        except ValueError as exc:
            raise PKIError(f"the signer's certificate is not PEM: {exc}") from None
        if not any(_issued_by(cert, ca) for ca in self.cas):
            raise PKIError("the signer's certificate was not issued by this store's CA")
        info = cert_info(cert)
        if info.store != self.store_id or info.role != "node":
            raise PKIError(f"the signer's certificate is of store {info.store} role {info.role}, not a node of it")
        pub = cert.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise PKIError("the signer's certificate has no ECDSA key")
        return info.name, pub, info.not_before.timestamp(), info.not_after.timestamp()

    def verify(self, doc: bytes, file_id: str, sha256: str) -> str:
        """The signer's node name if ``doc`` is a valid signature of ``file_id`` with ``sha256``; else PKIError."""
        if not isinstance(doc, bytes | bytearray) or not doc:
            raise PKIError("no signature")
        if len(doc) > MAX_SIG_BYTES:
            raise PKIError(f"signature document of {len(doc)} bytes (at most {MAX_SIG_BYTES})")
        try:
            d = json.loads(doc)  # bounded above; a nesting too deep for the parser is refused below
            if not isinstance(d, dict):
                raise TypeError("not an object")
            fields = {k: d[k] for k in ("v", "alg", "store", "id", "sha256", "signer", "cert", "sig")}
            sig = base64.b64decode(str(fields["sig"]), validate=True)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise PKIError(f"malformed signature document: {type(exc).__name__}") from None
        if fields["v"] != SIG_VERSION or fields["alg"] != SIG_ALG:
            raise PKIError(f"signature version {fields['v']!r}/{fields['alg']!r} is not one this release reads")
        if (fields["store"], fields["id"], fields["sha256"]) != (self.store_id, file_id, sha256):
            raise PKIError(
                f"the signature is of {fields['store']}/{fields['id']} {str(fields['sha256'])[:12]}, not of this file"
            )
        name, pub = self.signer_of(str(fields["cert"]))
        if name != fields["signer"]:
            raise PKIError(f"the signature says signer {fields['signer']!r} but its certificate is {name!r}")
        try:
            pub.verify(sig, _message(self.store_id, file_id, sha256), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise PKIError(f"the signature of {file_id} by {name} does not verify") from None
        return name
