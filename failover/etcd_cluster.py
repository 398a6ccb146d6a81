"""A local etcd cluster on loopback: three members for tests, drills and ``edgepair pair up``.

Rules:

- every member listens on 127.0.0.1 only, on ports that were free when the cluster was built;
- every process is started by us and stopped by its pid (never by name), also when a start fails;
- ``start()`` returns only once every member answers and the cluster has a raft leader, or raises ``DCSError``;
- every wait is bounded in time.

The default flags (``--heartbeat-interval 50 --election-timeout 500``) let etcd honour a lease TTL of 1 s; with etcd's
own defaults a TTL below ceil(1.5 x election timeout) is raised silently (TTL 1 becomes 2).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cluster.errors import DCSError

log = logging.getLogger(__name__)

ETCD_BIN = os.environ.get("EDGEPAIR_ETCD", shutil.which("etcd") or "/usr/bin/etcd")
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
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
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"


class EtcdCluster:
    """Start and stop an N-member etcd cluster under ``base_dir`` (one data dir and one log file per member).

    Usable as a context manager; ``stop()`` is idempotent and kills what is left by pid.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        names: tuple[str, ...] = ("ws-a", "ws-b", "witness"),
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        etcd_bin: str = ETCD_BIN,
    ) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"member names must be distinct and non-empty, got {names!r}")
        self.base_dir = Path(base_dir)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.etcd_bin = etcd_bin
        self.token = f"edgepair-{os.getpid()}-{free_port()}"
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
            )

    PORTS_FILE = "members.json"

    def _known_ports(self, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        import json

        path = self.base_dir / self.PORTS_FILE
        try:
            known = {n: (int(c), int(p)) for n, (c, p) in json.loads(path.read_text()).items()}
        except (OSError, ValueError, TypeError):
            return {}
        if set(known) != set(names) or not all((self.base_dir / f"{n}.etcd").exists() for n in names):
            return {}
        return known

    def _save_ports(self) -> None:
        import json

        ports = {n: [m.client_port, m.peer_port] for n, m in self.members.items()}
        (self.base_dir / self.PORTS_FILE).write_text(json.dumps(ports))

    # -- addresses -------------------------------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member's client URL, in member order."""
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
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._save_ports()
        try:
            for name in self.members:
                self._spawn(name)
            self.wait_healthy(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

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
        from pyetcd import etcdrpc  # local import: the cluster manager must load without grpc for --help

        member = self._member(name)
        import grpc

        channel = grpc.insecure_channel(member.endpoint)
        try:
            stub = etcdrpc.MaintenanceStub(channel)
            return stub.Status(etcdrpc.StatusRequest(), timeout)
        except grpc.RpcError as exc:
            raise DCSError(
                f"etcd member {name} at {member.endpoint} did not answer a status request: {exc.code()}"
            ) from exc
        finally:
            channel.close()

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
