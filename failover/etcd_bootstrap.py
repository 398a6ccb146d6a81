"""TLS and auth of a local etcd cluster (:mod:`failover.etcd_cluster`) from a certificate folder
(:class:`cluster.pki.CertDir`), checked before any member starts:

- member ``<name>`` serves ``<name>.crt``, which must name 127.0.0.1 (the members serve there): otherwise a
  ``DCSError`` that says how to issue it again;
- the folder's admin certificate (``root.crt``) is the identity of the manager's own calls and bootstraps etcd auth
  (:func:`failover.etcd_auth.enable_auth`: root, one user per workstation limited to the store's prefix);
- the store is the one the CA was made for unless one is given; the workstations' users are the members whose
  certificate has the role ``node`` unless they are given.

Any PKI error (a file missing, a certificate of another CA) becomes a ``DCSError`` naming the folder.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.errors import DCSError

if TYPE_CHECKING:
    from cluster.pki import Identity


@dataclass
class ClusterPKI:
    """Every member's identity, the admin's, the store and the workstations' user names."""

    identities: dict[str, Identity] = field(default_factory=dict)
    admin: Identity | None = None
    store_id: str | None = None
    node_users: tuple[str, ...] = ()


def load_cluster_pki(
    cert_dir: Path,
    names: Sequence[str],
    host: str,
    store_id: str | None = None,
    node_users: Sequence[str] | None = None,
) -> ClusterPKI:
    """Load and check every member's identity and the admin's now, with errors that say what to issue."""
    from cluster.pki import ADMIN_NAME, CertDir, PKIError, cert_info, load_certs

    certs = CertDir(cert_dir)
    pki = ClusterPKI(store_id=store_id, node_users=tuple(node_users) if node_users is not None else ())
    try:
        for name in names:
            ident = certs.identity(name)
            hosts = cert_info(load_certs(ident.cert)[0]).hosts
            if not any(same_ip(h, host) for h in hosts):
                raise DCSError(
                    f"{ident.cert} does not name {host} (it names {', '.join(hosts) or 'no host'}): the local etcd"
                    f" members serve on {host}; issue it again with `edgepair certs issue {name} --host {host}`"
                )
            pki.identities[name] = ident
        pki.admin = certs.identity(ADMIN_NAME)
        pki.store_id = pki.store_id or certs.store_id()
    except PKIError as exc:
        raise DCSError(f"etcd with TLS from {cert_dir}: {exc}") from exc
    if node_users is None:
        pki.node_users = tuple(n for n, i in pki.identities.items() if i.role == "node")
    return pki


def same_ip(host: str, ip: str) -> bool:
    """True when ``host`` is an IP address equal to ``ip`` (a DNS name never is)."""
    try:
        return bool(ipaddress.ip_address(host) == ipaddress.ip_address(ip))
    except ValueError:
        return False
