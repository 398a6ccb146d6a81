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
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cluster.errors import DCSError

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger(__name__)

ETCD_BIN = os.environ.get("EDGEPAIR_ETCD", shutil.which("etcd") or "/usr/bin/etcd")
HOST = "127.0.0.1"


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


@dataclass
class EtcdMember:
    """One member: its name, ports, data dir and (while running) its process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    secure: bool = False
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.secure else "http"

    @property
    def endpoint(self) -> str:
        """What clients dial: ``https://127.0.0.1:port`` with TLS, ``127.0.0.1:port`` in plain text."""
        return self.client_url if self.secure else f"{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.client_port}"


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
            self._load_pki(names, node_users)
        self.members: dict[str, EtcdMember] = {}
        # A cluster started here before keeps its ports: its members' data (and so the fencing tokens, which only
        # grow) are kept, and etcd's stored membership names those peer URLs.
        known = self._known_ports(names)
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

    PORTS_FILE = "members.json"
    _stored_tls: bool | None = None  # the mode the kept data dirs were made in (None: no kept data)

    @property
    def secure(self) -> bool:
        """True when the members serve TLS with client certificates (and auth is on once started)."""
        return self.cert_dir is not None

    def _load_pki(self, names: tuple[str, ...], node_users: Sequence[str] | None) -> None:
        """Load and check every member's identity and the admin's now, with errors that say what to issue."""
        import ipaddress

        from cluster.pki import ADMIN_NAME, CertDir, PKIError, cert_info, load_certs

        assert self.cert_dir is not None
        certs = CertDir(self.cert_dir)
        try:
            for name in names:
                ident = certs.identity(name)
                hosts = cert_info(load_certs(ident.cert)[0]).hosts
                if not any(_same_ip(h, HOST, ipaddress) for h in hosts):
                    raise DCSError(
                        f"{ident.cert} does not name {HOST} (it names {', '.join(hosts) or 'no host'}): the local etcd"
                        f" members serve on {HOST}; issue it again with `edgepair certs issue {name} --host {HOST}`"
                    )
                self.identities[name] = ident
            self.admin = certs.identity(ADMIN_NAME)
            self.store_id = self.store_id or certs.store_id()
        except PKIError as exc:
            raise DCSError(f"etcd with TLS from {self.cert_dir}: {exc}") from exc
        if node_users is None:
            self.node_users = tuple(n for n, i in self.identities.items() if i.role == "node")

    def client_identity(self) -> Identity | None:
        """The identity this manager's own calls use (the admin ``root``), None in plain text."""
        return self.admin

    def _known_ports(self, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        import json

        path = self.base_dir / self.PORTS_FILE
        try:
            data = json.loads(path.read_text())
            ports = data["members"] if "members" in data else data  # the older file held the ports only
            known = {n: (int(c), int(p)) for n, (c, p) in ports.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}
        if set(known) != set(names) or not all((self.base_dir / f"{n}.etcd").exists() for n in names):
            return {}
        self._stored_tls = bool(data.get("tls", False))
        return known

    def _save_ports(self) -> None:
        import json

        ports = {n: [m.client_port, m.peer_port] for n, m in self.members.items()}
        (self.base_dir / self.PORTS_FILE).write_text(json.dumps({"members": ports, "tls": self.secure}))

    def _check_mode(self) -> None:
        """Refuse to start data dirs made in the other mode (their stored peer URLs name the other scheme)."""
        if self._stored_tls is None or self._stored_tls == self.secure:
            return
        made, now = ("TLS", "plain text") if self._stored_tls else ("plain text", "TLS")
        raise DCSError(
            f"the etcd data under {self.base_dir} was made with {made} peers and cannot be started with {now}:"
            f" start it as it was made, or move {self.base_dir} away for a new cluster (fencing tokens then restart"
            " from 1: clear the nodes' data dirs too)"
        )

    # -- addresses -------------------------------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Every member's client endpoint, in member order: ``https://127.0.0.1:port`` (TLS) or ``127.0.0.1:port``."""
        return [m.endpoint for m in self.members.values()]

    def endpoint(self, name: str) -> str:
        return self._member(name).endpoint

    def pid(self, name: str) -> int | None:
        """The member's pid while its process is running (also while stopped by SIGSTOP), else None."""
        member = self._member(name)
        if member.proc is None or member.proc.poll() is not None:
            return None
        return member.proc.pid

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        """Start every member and wait until each answers and a raft leader exists."""
        self._check_mode()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._save_ports()
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
        member = self._member(name)
        proc = member.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        if sig in (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP):
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        self._close_log(member)

    def resume_member(self, name: str) -> None:
        """SIGCONT a member stopped with SIGSTOP."""
        self.stop_member(name, signal.SIGCONT)

    def stop(self) -> None:
        """Stop every member by pid (SIGCONT first, in case one is stopped, then SIGKILL). Safe to call twice."""
        for member in self.members.values():
            proc = member.proc
            if proc is not None and proc.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(proc.pid, sig)
                    except ProcessLookupError:
                        break
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log.error("etcd member %s (pid %d) did not exit after SIGKILL", member.name, proc.pid)
            self._close_log(member)

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
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members.values())
        state = "existing" if member.data_dir.exists() else "new"
        cmd = [
            self.etcd_bin,
            "--name",
            name,
            "--data-dir",
            str(member.data_dir),
            "--listen-client-urls",
            member.client_url,
            "--advertise-client-urls",
            member.client_url,
            "--listen-peer-urls",
            member.peer_url,
            "--initial-advertise-peer-urls",
            member.peer_url,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            self.token,
            "--heartbeat-interval",
            str(self.heartbeat_ms),
            "--election-timeout",
            str(self.election_ms),
            "--pre-vote",  # a member coming back from isolation must not depose a working raft leader
        ]
        if self.secure:
            ident = self.identities[name]
            tls = ["--trusted-ca-file", str(ident.ca), "--cert-file", str(ident.cert), "--key-file", str(ident.key)]
            cmd += ["--client-cert-auth", *tls]
            cmd += [
                "--peer-client-cert-auth",
                *(f"--peer-{flag[2:]}" if flag.startswith("--") else flag for flag in tls),
            ]
        self._close_log(member)
        member.log_file = open(member.log_path, "ab")
        member.proc = subprocess.Popen(
            cmd, stdout=member.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.info("etcd member %s started: pid %d, client %s", name, member.proc.pid, member.endpoint)

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

    @staticmethod
    def _close_log(member: EtcdMember) -> None:
        if member.log_file is not None and (member.proc is None or member.proc.poll() is not None):
            member.log_file.close()
            member.log_file = None


def _same_ip(host: str, ip: str, ipaddress: Any) -> bool:
    try:
        return bool(ipaddress.ip_address(host) == ipaddress.ip_address(ip))
    except ValueError:
        return False
