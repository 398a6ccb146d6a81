"""A local etcd cluster on loopback: three members for tests, drills and ``edgepair pair up``.

Rules:

- every member listens on 127.0.0.1 only, on ports that were free when the cluster was built;
- every process is started by us and stopped by its pid (never by name), also when a start fails;
- ``start()`` returns only once every member answers and the cluster has a raft leader, or raises ``DCSError``;
- every wait is bounded in time;
- with a certificate folder (``cert_dir``, a :class:`cluster.pki.CertDir`) every member serves only TLS on its client
  and peer URLs and requires a client certificate of the store CA on both (``--client-cert-auth``,
  ``--peer-client-cert-auth``); member ``<name>`` serves ``<name>.crt``, which must name 127.0.0.1. ``start()`` then
  bootstraps etcd auth (``failover.etcd_auth``: root, one user per workstation limited to the store's prefix) with
  the folder's admin certificate ``root.crt``, idempotently, so a restart on the same data dirs is safe. Without a
  folder the members speak plain HTTP: the explicit opt-out of a lab, logged as a warning;
- a data dir made in one mode is never started in the other: its stored peer URLs would not match (raised as
  ``DCSError`` with the fix).

The default flags (``--heartbeat-interval 50 --election-timeout 500``) let etcd honour a lease TTL of 1 s; with etcd's
own defaults a TTL below ceil(1.5 x election timeout) is raised silently (TTL 1 becomes 2).

The parts: :class:`EtcdCluster` (this module) builds, starts, waits for and stops the cluster;
:mod:`failover.etcd_member` one member's command line and process, :mod:`failover.etcd_bootstrap` the certificates
and the auth bootstrap, :mod:`failover.etcd_kept` the ports and mode kept beside the data dirs.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.errors import DCSError
from failover.etcd_bootstrap import load_cluster_pki
from failover.etcd_kept import check_mode, read_kept, save_kept
from failover.etcd_member import HOST, EtcdMember, etcd_command

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger(__name__)

__all__ = ["ETCD_BIN", "HOST", "EtcdCluster", "EtcdMember", "free_port"]

ETCD_BIN = os.environ.get("EDGEPAIR_ETCD", shutil.which("etcd") or "/usr/bin/etcd")


_GIVEN: set[int] = set()  # ports this process handed out: never twice (the first may not be bound yet)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.

    A port the kernel picks (``bind(0)``) is an ephemeral one, which any outgoing connection of any process (Ray's
    clients, etcd's peers) may take before our server binds it: CI once saw an etcd member fail with "address already
    in use". Below that range only a server asking for that very port can take it."""
    high = max(2048, _ephemeral_low())
    low = max(1024, high - 12_000)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range: let the kernel choose
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class EtcdCluster:
    """Start and stop an N-member etcd cluster under ``base_dir`` (one data dir and one log file per member).

    Usable as a context manager; ``stop()`` is idempotent and kills what is left by pid.

    With ``cert_dir``: TLS and auth (module rules). ``store_id`` is the store whose key prefix the workstations may
    use (default: the store the CA was made for) and ``node_users`` the workstations' user names (default: every member
    whose certificate has the role ``node``); :meth:`authorize` grants one more store (a bench uses many).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        names: tuple[str, ...] = ("ws-a", "ws-b", "witness"),
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        etcd_bin: str = ETCD_BIN,
        *,
        cert_dir: str | os.PathLike[str] | None = None,
        store_id: str | None = None,
        node_users: Sequence[str] | None = None,
    ) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"member names must be distinct and non-empty, got {names!r}")
        self.base_dir = Path(base_dir)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.etcd_bin = etcd_bin
        self.token = f"edgepair-{os.getpid()}-{free_port()}"
        self.cert_dir = Path(cert_dir) if cert_dir is not None else None
        self.identities: dict[str, Identity] = {}
        self.admin: Identity | None = None
        self.store_id = store_id
        self.node_users: tuple[str, ...] = tuple(node_users) if node_users is not None else ()
        if self.cert_dir is not None:
            pki = load_cluster_pki(self.cert_dir, names, HOST, store_id, node_users)
            self.identities, self.admin = pki.identities, pki.admin
            self.store_id, self.node_users = pki.store_id, pki.node_users
        self.members: dict[str, EtcdMember] = {}
        # A cluster started here before keeps its ports: its members' data (and so the fencing tokens, which only
        # grow) are kept, and etcd's stored membership names those peer URLs.
        known, self._stored_tls = read_kept(self.base_dir, names)
        for name in names:
            client, peer = known.get(name) or (free_port(), free_port())
            self.members[name] = EtcdMember(
                name=name,
                client_port=client,
                peer_port=peer,
                data_dir=self.base_dir / f"{name}.etcd",
                log_path=self.base_dir / f"{name}.etcd.log",
                secure=self.secure,
            )

    @property
    def secure(self) -> bool:
        """True when the members serve TLS with client certificates (and auth is on once started)."""
        return self.cert_dir is not None

    def client_identity(self) -> Identity | None:
        """The identity this manager's own calls use (the admin ``root``), None in plain text."""
        return self.admin

    # -- addresses -------------------------------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Every member's client endpoint, in member order: ``https://127.0.0.1:port`` (TLS) or ``127.0.0.1:port``."""
        return [m.endpoint for m in self.members.values()]

    def endpoint(self, name: str) -> str:
        return self._member(name).endpoint

    def pid(self, name: str) -> int | None:
        """The member's pid while its process is running (also while stopped by SIGSTOP), else None."""
        return self._member(name).pid()

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        """Start every member and wait until each answers and a raft leader exists."""
        check_mode(self.base_dir, self._stored_tls, self.secure)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        save_kept(self.base_dir, {n: [m.client_port, m.peer_port] for n, m in self.members.items()}, self.secure)
        if not self.secure:
            log.warning(
                "etcd under %s runs in plain text with no auth: anyone who reaches its ports can change the"
                " store's leader and assignment (a lab opt-out; never on a store network)",
                self.base_dir,
            )
        try:
            for name in self.members:
                self._spawn(name)
            self.wait_healthy(timeout=timeout)
            if self.secure and self.store_id is not None:
                self.authorize(self.store_id, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def authorize(self, store_id: str, node_users: Sequence[str] | None = None, timeout: float = 10.0) -> list[str]:
        """Bootstrap etcd auth for ``store_id`` (idempotent; see ``failover.etcd_auth``); returns what it changed."""
        from failover.etcd_auth import enable_auth

        if self.admin is None:
            raise DCSError(f"etcd under {self.base_dir} runs without TLS: there is no auth to bootstrap")
        users = self.node_users if node_users is None else node_users
        return enable_auth(self.endpoints, store_id, self.admin, users, timeout)

    def start_member(self, name: str, wait: bool = True, timeout: float = 15.0) -> None:
        """(Re)start one member from its data dir; with ``wait`` until it answers a status request."""
        if self.pid(name) is not None:
            raise DCSError(f"etcd member {name} is already running (pid {self.pid(name)})")
        self._spawn(name)
        if wait:
            self._wait_answering([name], timeout)

    def stop_member(self, name: str, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send ``sig`` to one member; for a terminating signal wait (bounded) until the process is gone."""
        self._member(name).signal(sig, timeout)

    def resume_member(self, name: str) -> None:
        """SIGCONT a member stopped with SIGSTOP."""
        self.stop_member(name, signal.SIGCONT)

    def stop(self) -> None:
        """Stop every member by pid (SIGCONT first, in case one is stopped, then SIGKILL). Safe to call twice."""
        for member in self.members.values():
            member.kill()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- health ----------------------------------------------------------------------------------------------------

    def status(self, name: str, timeout: float = 1.0) -> Any:
        """The member's maintenance Status response (version, leader id, raft term), or raise DCSError."""
        import grpc  # local import: the cluster manager must load without grpc for --help

        from failover.etcd_tls import describe, explain, member_status

        member = self._member(name)
        try:
            return member_status(member.endpoint, self.admin, timeout)
        except grpc.RpcError as exc:
            why = explain(exc, member.endpoint, self.admin) or describe(exc)
            raise DCSError(f"etcd member {name} at {member.endpoint} did not answer a status request: {why}") from exc

    def leader_name(self, timeout: float = 5.0) -> str | None:
        """The name of the raft leader as reported by the running members; None if none is known within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            ids: dict[int, str] = {}
            leader_id = 0
            for name in self.members:
                if self.pid(name) is None:
                    continue
                try:
                    st = self.status(name, timeout=0.5)
                except DCSError:
                    continue
                ids[st.header.member_id] = name
                leader_id = leader_id or st.leader
            if leader_id and leader_id in ids:
                return ids[leader_id]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Wait until every running member answers and one of them is the raft leader."""
        running = [n for n in self.members if self.pid(n) is not None]
        self._wait_answering(running, timeout)
        if self.leader_name(timeout=timeout) is None:
            raise DCSError(f"etcd cluster under {self.base_dir} elected no leader within {timeout:.0f}s")

    # -- internals -------------------------------------------------------------------------------------------------

    def _member(self, name: str) -> EtcdMember:
        try:
            return self.members[name]
        except KeyError:
            raise DCSError(f"no etcd member named {name!r}; members: {', '.join(self.members)}") from None

    def _spawn(self, name: str) -> None:
        member = self._member(name)
        identity = self.identities[name] if self.secure else None
        cmd = etcd_command(
            self.etcd_bin,
            member,
            list(self.members.values()),
            token=self.token,
            heartbeat_ms=self.heartbeat_ms,
            election_ms=self.election_ms,
            identity=identity,
        )
        member.spawn(cmd)

    def _wait_answering(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for name in list(pending):
                member = self._member(name)
                if member.proc is not None and member.proc.poll() is not None:
                    raise DCSError(
                        f"etcd member {name} exited with code {member.proc.returncode}; see {member.log_path}"
                    )
                try:
                    self.status(name, timeout=0.5)
                    pending.remove(name)
                except DCSError:
                    pass
            if pending and time.monotonic() >= deadline:
                raise DCSError(f"etcd members {', '.join(pending)} did not answer within {timeout:.0f}s")
            if pending:
                time.sleep(0.05)
