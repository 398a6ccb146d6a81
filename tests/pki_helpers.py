"""A store PKI made in a test's tmp folder: the store CA, two node certificates, a witness and the admin.

A test module makes its fixtures from :func:`make_pki`::

    @pytest.fixture
    def pki(tmp_path: Path) -> StorePKI:
        return make_pki(tmp_path / "pki")

and ``make_pki(tmp_path / "other-pki")`` gives another CA (same store and host names): an attacker's own CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.pki import CertDir, Identity

STORE = "s1"
NODES = ("ws-a", "ws-b")
WITNESS = "wit-1"


@dataclass(frozen=True)
class StorePKI:
    """The folder of a store CA with certificates for ``ws-a``, ``ws-b`` (nodes) and ``wit-1`` (witness)."""

    path: Path
    store: str = STORE

    def identity(self, name: str) -> Identity:
        return Identity.load(self.path, name)


def make_pki(folder: Path, store: str = STORE, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> StorePKI:
    cd = CertDir(folder)
    cd.init(store)
    for node in NODES:
        cd.issue(node, "node", list(hosts))
    cd.issue(WITNESS, "witness", list(hosts))
    cd.issue("root", "admin")
    return StorePKI(folder, store)
