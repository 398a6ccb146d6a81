"""SSH to the hosts of a deployed store for a drill (:mod:`cluster.drill_remote`), and the local commands a drill runs
about them (a BMC's power off and on).

- The same user, key and known_hosts as Ansible, with ``BatchMode=yes`` and ``StrictHostKeyChecking=yes`` put first
  (ssh keeps the first value of an option, so no inventory can turn host-key checking off here), and bounded
  timeouts: every command has a deadline and says which host did not finish in time.
- One control master per host in a private folder of its own with a short path (a Unix socket path has at most 107
  bytes), so that a fault is one round trip away; closed, and the folder removed, by :meth:`SshHosts.close`.
- A failure is one :class:`DrillTargetError` naming the host, what SSH said and the fix (:func:`ssh_failure`). Every
  command and error shown is redacted.
- A fault's command is timed (:meth:`SshHosts.fault`): the SSH round trip and systemctl are part of every takeover
  time a drill reports, so the victim's description says it.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster.errors import EdgepairError
from cluster.redact import redact

log = logging.getLogger("cluster.drill_remote")  # the lines the drill wrote before the split keep its name

SSH_OPTIONS = ("BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=5", "ServerAliveInterval=2",
               "ServerAliveCountMax=3", "LogLevel=ERROR")  # fmt: skip
BOOT_WAIT_S = 180.0


class DrillTargetError(EdgepairError):
    """The store cannot be drilled as described (bad target file, host unreachable, refused)."""


@dataclass(frozen=True)
class Ssh:
    user: str | None = None
    port: int | None = None
    key: str | None = None
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    role: str  # "workstation" or "witness"
    ssh: Ssh = field(default_factory=Ssh)
    power_off: tuple[str, ...] = ()
    power_on: tuple[str, ...] = ()


def ssh_argv(host: Host, command: str, control_dir: Path | None = None) -> list[str]:
    """The ``ssh`` command line that runs ``command`` on ``host``: our safety options first, then the inventory's."""
    argv = ["ssh"]
    for opt in SSH_OPTIONS:
        argv += ["-o", opt]
    if control_dir is not None:
        argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/%C", "-o", "ControlPersist=300"]
    if host.ssh.port:
        argv += ["-p", str(host.ssh.port)]
    if host.ssh.key:
        argv += ["-i", os.path.expanduser(host.ssh.key)]
    argv += list(host.ssh.args)
    if host.ssh.user:
        argv += ["-l", host.ssh.user]
    return [*argv, host.address, "--", command]


def ssh_failure(host: Host, stderr: str) -> str:
    """One sentence naming the host, what SSH said and the fix."""
    last = redact((stderr.strip().splitlines() or ["no message"])[-1])
    who = f"{host.name} ({host.address})"
    text = stderr.lower()
    if "host key verification failed" in text or "remote host identification has changed" in text:
        return (f"{who}: SSH host key not in the known_hosts the inventory names, or different from it ({last}): "
                "check the host's key out of band and enroll it (README, 'SSH host keys')")  # fmt: skip
    if "permission denied" in text:
        user = host.ssh.user or "(default)"
        return f"{who}: SSH refused the key for user {user} ({last}): check ansible_user and the key"
    if any(s in text for s in ("timed out", "no route", "refused", "could not resolve", "network is unreachable")):
        return f"{who} is unreachable over SSH ({last}): check its address in the inventory and that it is up"
    return f"{who}: SSH failed ({last})"


def run_local(argv: tuple[str, ...], what: str, timeout: float) -> None:
    """Run ``argv`` on this machine (a BMC's power command); :class:`DrillTargetError` saying ``what`` failed."""
    try:
        r = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DrillTargetError(f"{what}: `{redact(shlex.join(argv))}` failed: {redact(exc)}") from None
    if r.returncode != 0:
        err = redact(r.stderr.decode(errors="replace").strip()[-400:])
        raise DrillTargetError(f"{what}: `{redact(shlex.join(argv))}` exited {r.returncode}: {err}")


def host_ip(h: Host) -> str:
    """The host's IP address (its address, or what its name resolves to)."""
    try:
        return str(ipaddress.ip_address(h.address))
    except ValueError:
        import socket

        return socket.gethostbyname(h.address)


class SshHosts:
    """Commands on the store's hosts: :meth:`run`, :meth:`on_all`, :meth:`fault`, :meth:`wait_up`, :meth:`close`."""

    def __init__(self, hosts: dict[str, Host]) -> None:
        self.hosts = hosts
        # SSH control sockets: a short path of their own (a Unix socket path has at most 107 bytes)
        self.control = Path(tempfile.mkdtemp(prefix="ep-ssh-", dir="/tmp"))

    def run(self, host: str, command: str, *, timeout: float = 30.0, input: bytes | None = None) -> bytes:
        """``command`` on ``host`` over SSH; its stdout. Raises :class:`DrillTargetError` naming the host."""
        h = self.hosts[host]
        try:
            r = subprocess.run(ssh_argv(h, command, self.control), input=input, capture_output=True, timeout=timeout,
                               check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise DrillTargetError(
                f"{host} ({h.address}): `{redact(command)[:120]}` did not finish in {timeout:.0f} s"
            ) from None
        if r.returncode == 255:
            raise DrillTargetError(ssh_failure(h, r.stderr.decode(errors="replace")))
        if r.returncode != 0:
            err = redact(r.stderr.decode(errors="replace").strip()[-400:])
            raise DrillTargetError(f"{host}: `{redact(command)[:120]}` exited {r.returncode}: {err or 'no message'}")
        return r.stdout

    def on_all(self, hosts: list[str], command: str, timeout: float = 30.0, fault: bool = False) -> None:
        """``command`` on every host at once (timed as a fault with ``fault``); the first failure is raised."""
        run = self.fault if fault else self.run
        with concurrent.futures.ThreadPoolExecutor(len(hosts) or 1) as pool:
            for f in [pool.submit(run, h, command, timeout=timeout) for h in hosts]:
                f.result()

    def fault(self, host: str, command: str, timeout: float = 30.0) -> float:
        """Run a fault's command; how long after the drill asked it had done its work (module rules)."""
        t = time.monotonic()
        self.run(host, command, timeout=timeout)
        took = time.monotonic() - t
        log.info("drill: fault applied on %s %.2f s after the drill asked", host, took)
        return took

    def wait_up(self, host: str, bound_s: float = BOOT_WAIT_S) -> None:
        """Wait (bounded) until ``host`` answers over SSH and systemd finished booting."""
        deadline = time.monotonic() + bound_s
        while True:
            try:
                self.run(host, "systemctl is-system-running --wait >/dev/null 2>&1; true", timeout=30)
                return
            except DrillTargetError as exc:
                if time.monotonic() > deadline:
                    raise DrillTargetError(f"{host} did not come back within {bound_s:.0f} s: {exc}") from None
                time.sleep(1.0)

    def close_master(self, host: str) -> None:
        h = self.hosts[host]
        subprocess.run([*ssh_argv(h, "true", self.control)[:-3], "-O", "exit", h.address],
                       capture_output=True, timeout=10, check=False)  # fmt: skip

    def close(self) -> None:
        """Close every control master and remove their folder."""
        for h in self.hosts:
            self.close_master(h)
        shutil.rmtree(self.control, ignore_errors=True)
