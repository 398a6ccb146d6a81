"""The ``camera-cut`` drill's fault: one camera unreachable from one workstation only, the other still reaching it.

In the field this is a switch port, a VLAN or a route that one workstation loses while the other keeps it. The pair
runs on one loopback here, so the path cannot be cut by address. It is cut by *process* instead: the victim's
camera actor (the one process that reads that camera) is moved into a cgroup of its own on the cgroup v2 hierarchy,
and an nftables rule drops every packet that a socket of that cgroup sends to the camera's port (``socket
cgroupv2``: a new connection cannot even start), plus every packet to or from the local ports of the connections
it already had (re-scanned from ``/proc`` every 50 ms while the cut lasts, as ``partition`` does). Packets are
dropped, never answered: the capture sees a stream that goes silent, then connections that time out, as with a
pulled cable. The other workstation's processes are in no such cgroup and reach the camera as before.

Restore removes the rule and moves whatever is left in the drill's cgroup back to where it was, then removes the
cgroup. Needs root (cgroup and nftables), ``nft`` and cgroup v2 mounted at ``/sys/fs/cgroup`` (a unified system) or
``/sys/fs/cgroup/unified`` (a hybrid one): nftables resolves the cgroup's path under ``/sys/fs/cgroup``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

from cluster.drill_faults import _socket_ports, nft
from cluster.errors import EdgepairError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
"""Where nftables resolves a ``socket cgroupv2`` path (it is relative to this folder)."""

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


def camera_port(source: str) -> int:
    """The TCP port a network camera's source URL connects to; a file is refused (nothing to cut)."""
    parts = urlsplit(source)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise EdgepairError(
            "camera-cut needs a network camera whose source is an rtsp://, rtsps://, http:// or https:// URL (this one"
            " is not: a file, or another scheme); drill a pair whose cameras are such streams"
        )
    try:
        return parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise EdgepairError("camera-cut: the camera's source URL has an invalid port") from None


def cgroup2_mount() -> Path:
    """The cgroup v2 mount nftables can address (``/sys/fs/cgroup`` itself or ``/sys/fs/cgroup/unified``)."""
    mounts = [
        Path(parts[1])
        for parts in (line.split() for line in Path("/proc/self/mounts").read_text().splitlines())
        if len(parts) >= 3 and parts[2] == "cgroup2"
    ]
    for m in mounts:
        if m == CGROUP_ROOT or m.parent == CGROUP_ROOT:
            return m
    raise EdgepairError(
        "camera-cut needs cgroup v2 mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified (found: "
        f"{', '.join(map(str, mounts)) or 'none'}): mount -t cgroup2 none /sys/fs/cgroup/unified"
    )


def _cgroup_of(pid: int) -> str:
    """``pid``'s path on the cgroup v2 hierarchy (the ``0::`` line of /proc/<pid>/cgroup)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    raise EdgepairError(f"camera-cut: process {pid} is on no cgroup v2 hierarchy")


class CameraCut:
    """Cut the camera at TCP port ``port`` off from process ``pid`` (a camera actor); :meth:`heal` undoes it."""

    def __init__(self, pid: int, port: int, label: str) -> None:
        if shutil.which("nft") is None:
            raise EdgepairError("camera-cut needs nftables (`nft`) and CAP_NET_ADMIN: install nftables or skip it")
        self.pid = pid
        self.port = port
        self.label = label
        self.mount = cgroup2_mount()
        self.name = f"edgepair-drill-{os.getpid()}"
        self.cgroup = self.mount / self.name
        self.home = _cgroup_of(pid)
        self.table = f"edgepair_drill_cut_{os.getpid()}"
        self.blocked: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cut(self) -> None:
        path = self.cgroup.relative_to(CGROUP_ROOT)
        try:
            self.cgroup.mkdir(exist_ok=True)
            nft(
                f"table inet {self.table} {{\n set conn {{ type inet_service; }}\n"
                f" chain out {{ type filter hook output priority -10; policy accept;\n"
                f'  socket cgroupv2 level 1 "{path}"'
                f" tcp dport {self.port} drop\n"
                f"  tcp dport {self.port} tcp sport @conn drop\n"
                f"  tcp sport {self.port} tcp dport @conn drop\n }}\n}}\n"
            )
            # Moved first, then its existing connections listed: a socket opened in between is in the new cgroup.
            (self.cgroup / "cgroup.procs").write_text(str(self.pid))
            self._follow()
        except (OSError, subprocess.CalledProcessError) as exc:
            self.heal()
            why = exc.stderr.decode().strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            raise EdgepairError(f"camera-cut: could not cut {self.label}: {why}") from None
        self._thread = threading.Thread(target=self._follow_loop, name="camera-cut", daemon=True)
        self._thread.start()
        log.info("drill: %s cut off (port %d, process %d in cgroup %s)", self.label, self.port, self.pid, self.name)

    def _follow(self) -> None:
        new = _socket_ports(self.pid, {self.port}) - self.blocked
        if new:
            nft("".join(f"add element inet {self.table} conn {{ {p} }}\n" for p in sorted(new)))
            self.blocked |= new

    def _follow_loop(self) -> None:
        warned = False
        while not self._stop.wait(0.05):
            try:
                self._follow()
            except (subprocess.SubprocessError, OSError) as exc:
                if not warned:  # once: it is retried every 50 ms
                    log.warning("drill: camera-cut: could not follow the actor's sockets: %s", exc)
                warned = True

    def heal(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            nft(f"delete table inet {self.table}\n")
        except subprocess.CalledProcessError as exc:
            log.warning("drill: camera-cut: table %s not removed: %s", self.table, exc.stderr.decode().strip())
        home = self.mount / self.home.lstrip("/")
        try:
            for pid in (self.cgroup / "cgroup.procs").read_text().split():
                try:
                    (home / "cgroup.procs").write_text(pid)
                except OSError as exc:  # the process ended meanwhile
                    log.debug("drill: camera-cut: process %s not moved back: %s", pid, exc)
            self.cgroup.rmdir()
        except OSError as exc:
            log.warning("drill: camera-cut: cgroup %s not removed: %s", self.cgroup, exc)
        log.info("drill: %s reachable again", self.label)
