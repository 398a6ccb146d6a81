"""One member of a local etcd cluster (:mod:`failover.etcd_cluster`): its addresses, its command line and its process.

- It listens on 127.0.0.1 only; with TLS (``secure``) it serves only ``https`` on its client and peer URLs and
  requires a client certificate of the store CA on both (``--client-cert-auth``, ``--peer-client-cert-auth``).
- Its process is started in a new session with its output appended to its log file, and stopped by its pid, never by
  name; a terminating signal is waited for (bounded), then SIGKILL; SIGSTOP, SIGTSTP and SIGCONT are not waited for.
- Its log file is closed once its process is gone (a stopped, not dead, member keeps it open).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.pki import Identity

log = logging.getLogger("failover.etcd_cluster")  # the lines the cluster wrote before the split keep its name

HOST = "127.0.0.1"
NOT_WAITED = (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP)


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

    def pid(self) -> int | None:
        """The pid while the process is running (also while stopped by SIGSTOP), else None."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid

    def spawn(self, cmd: list[str]) -> None:
        """Start ``cmd`` as this member's process, its output appended to the member's log file."""
        self.close_log()
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.info("etcd member %s started: pid %d, client %s", self.name, self.proc.pid, self.endpoint)

    def signal(self, sig: int, timeout: float) -> None:
        """Send ``sig``; for a terminating signal wait (bounded) until the process is gone, then SIGKILL."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        if sig in NOT_WAITED:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        self.close_log()

    def kill(self) -> None:
        """SIGCONT (in case it is stopped), then SIGKILL, by pid; wait up to 10 s. Safe to call twice."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    break
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("etcd member %s (pid %d) did not exit after SIGKILL", self.name, proc.pid)
        self.close_log()

    def close_log(self) -> None:
        if self.log_file is not None and (self.proc is None or self.proc.poll() is not None):
            self.log_file.close()
            self.log_file = None


def etcd_command(
    etcd_bin: str,
    member: EtcdMember,
    members: list[EtcdMember],
    *,
    token: str,
    heartbeat_ms: int,
    election_ms: int,
    identity: Identity | None = None,
) -> list[str]:
    """The command line of ``member`` in the cluster of ``members`` (with ``identity``: TLS on both ports)."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    state = "existing" if member.data_dir.exists() else "new"
    cmd = [
        etcd_bin,
        "--name",
        member.name,
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
        token,
        "--heartbeat-interval",
        str(heartbeat_ms),
        "--election-timeout",
        str(election_ms),
        "--pre-vote",  # a member coming back from isolation must not depose a working raft leader
    ]
    if identity is not None:
        tls = [
            "--trusted-ca-file",
            str(identity.ca),
            "--cert-file",
            str(identity.cert),
            "--key-file",
            str(identity.key),
        ]
        cmd += ["--client-cert-auth", *tls]
        cmd += [
            "--peer-client-cert-auth",
            *(f"--peer-{flag[2:]}" if flag.startswith("--") else flag for flag in tls),
        ]
    return cmd
