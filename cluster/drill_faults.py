"""Faults for ``edgepair drill``: signals to a workstation's processes, restarts from the pair state, a network cut.

Every process touched here was started by ``edgepair pair up`` (or by a restart below) and is addressed by pid, never
by name. A workstation is its node agent, the agent's descendants (its private Ray: GCS, raylet, workers) and its etcd
member. Restarts re-run exactly what ``pair up`` ran: the agent's command line, and the etcd member's own argv (read
from ``/proc/<pid>/cmdline`` before the fault and kept in ``pair.json``) with ``--initial-cluster-state existing``.

The network cut (``partition``): the pair runs on loopback in one network namespace, so a namespace cannot be put
between two of its processes after the fact. The cut is an nftables black hole instead (packets dropped, no RST, as a
pulled cable): every TCP packet to or from the victim's Flight port, and every packet of the victim agent's own
sockets to the other etcd members (their local ports, re-scanned from ``/proc`` every 50 ms while the cut lasts), plus
the victim's etcd member frozen with SIGSTOP (a silent peer for raft, a silent server for its own agent). The health
port stays open: the drill harness observes through it. See docs/drills.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cluster.errors import EdgepairError
from cluster.pair import STATE, _alive, admin_identity, descendants, stop_pid

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``pair.json`` atomically (new pids after a restart, so that ``pair down`` stops them)."""
    path = run_dir / STATE
    tmp = path.with_suffix(".drill.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    except OSError:
        return []


def remember_etcd_argv(run_dir: Path, state: dict[str, Any]) -> None:
    """Keep each running etcd member's argv in the state, so that a killed member can be restarted as it ran."""
    changed = False
    for v in state["etcd"].values():
        if v.get("pid") and _alive(v["pid"]) and "argv" not in v:
            argv = cmdline(v["pid"])
            if argv:
                v["argv"] = argv
                changed = True
    if changed:
        save_state(run_dir, state)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def etcd_peer_port(state: dict[str, Any], member: str) -> int:
    return int(_flag(state["etcd"][member]["argv"], "--listen-peer-urls").rsplit(":", 1)[1])


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue


def workstation_pids(state: dict[str, Any], node: str) -> list[int]:
    """Every process of the workstation's service: its supervisor first, then the agent, then the agent's Ray."""
    pid = int(state["nodes"][node]["pid"])
    if not _alive(pid):
        return []
    agent = agent_pid(state, node)
    return [pid, *([agent] if agent != pid else []), *(p for p in descendants(pid) if p != agent)]


def agent_pid(state: dict[str, Any], node: str) -> int:
    """The node agent's pid: the supervisor's child started with ``--agent`` (``cluster.supervise``), or the recorded
    pid itself when it runs the agent without a supervisor."""
    pid = int(state["nodes"][node]["pid"])
    if "--agent" in cmdline(pid):
        return pid
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        kids = []
    return next((k for k in kids if "--agent" in cmdline(k)), pid)


def kill_all(pids: list[int], bound_s: float = 10.0) -> None:
    """SIGSTOP every pid first (nothing acts in between), then SIGKILL, and wait (bounded) until all are gone."""
    signal_all(pids, signal.SIGSTOP)
    signal_all(pids, signal.SIGKILL)
    deadline = time.monotonic() + bound_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [p for p in pids if _alive(p)]
    if left:
        log.warning("drill: pids %s still alive %.0f s after SIGKILL", left, bound_s)


def ray_temp_dir(state: dict[str, Any], node: str, pid: int) -> Path:
    """The node's Ray temp dir as ``actors.ray_actors.start_ray`` names it (the node's run dir: its data dir's
    parent, ``.run-<node>``, as ``cluster.node.Node`` sets it)."""
    from actors.ray_actors import ray_root

    run_dir = Path(state["nodes"][node]["data_dir"]).parent / f".run-{node}"
    return ray_root(run_dir) / str(pid)


def kill_etcd_member(state: dict[str, Any], member: str) -> None:
    pid = state["etcd"][member].get("pid")
    if pid and _alive(pid):
        log.info("drill: SIGKILL etcd member %s (pid %d)", member, pid)
        kill_all([pid])


def restart_etcd_member(run_dir: Path, state: dict[str, Any], member: str, wait_s: float = 15.0) -> int:
    """Start a killed member again with its own argv (data dir, ports, flags), as an existing member."""
    v = state["etcd"][member]
    if v.get("pid") and _alive(v["pid"]):
        return int(v["pid"])
    argv = list(v["argv"])
    argv[argv.index("--initial-cluster-state") + 1] = "existing"
    log_path = Path(run_dir) / "etcd" / f"{member}.etcd.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    v["pid"] = proc.pid
    save_state(run_dir, state)
    log.info("drill: etcd member %s restarted: pid %d", member, proc.pid)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if member_status(v["endpoint"], identity=admin_identity(state)) is not None:
            return proc.pid
        if proc.poll() is not None:
            raise EdgepairError(f"etcd member {member} exited at restart (code {proc.returncode}); see {log_path}")
        time.sleep(0.1)
    raise EdgepairError(f"etcd member {member} did not answer within {wait_s:.0f} s of its restart; see {log_path}")


def member_status(endpoint: str, timeout: float = 0.5, identity: Any = None) -> tuple[int, int] | None:
    """(member id, leader id) from the member's Status, or None if it does not answer. ``identity``: the pair's
    admin certificate when its etcd runs TLS (``pair.json`` names the folder), None for a plain-text pair."""
    from failover.raft import member_status as status

    st = status(endpoint, timeout, identity=identity)
    return None if st is None else (st.member_id, st.leader_id)


def etcd_leader(state: dict[str, Any], timeout: float = 5.0) -> str | None:
    """The name of the raft leader among the running members, or None within ``timeout``."""
    deadline = time.monotonic() + timeout
    identity = admin_identity(state)
    while True:
        ids, leader = {}, 0
        for name, v in state["etcd"].items():
            if v.get("pid") and _alive(v["pid"]):
                st = member_status(v["endpoint"], identity=identity)
                if st is not None:
                    ids[st[0]] = name
                    leader = leader or st[1]
        if leader in ids:
            return ids[leader]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def restart_node(run_dir: Path, state: dict[str, Any], node: str) -> int:
    """Run the node agent again exactly as ``pair up`` did (same config, name, log); returns its new pid."""
    v = state["nodes"][node]
    if _alive(v["pid"]):
        return int(v["pid"])
    with open(v["log"], "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "node", "--config", v["config"], "--name", node],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(REPO),
        )
    v["pid"] = proc.pid
    save_state(run_dir, state)
    log.info("drill: node %s restarted: pid %d", node, proc.pid)
    return proc.pid


def reap_orphans(pids: list[int], bound_s: float = 5.0) -> None:
    """Stop (by pid) what is left of a killed agent's Ray once the agent is gone."""
    for pid in pids:
        if _alive(pid):
            stop_pid(pid, term_timeout=bound_s)


def _socket_ports(pid: int, remote_ports: set[int]) -> set[int]:
    """Local ports of ``pid``'s TCP sockets whose remote port is in ``remote_ports`` (loopback, IPv4)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    out = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[9] in inodes and int(f[2].rsplit(":", 1)[1], 16) in remote_ports:
                out.add(int(f[1].rsplit(":", 1)[1], 16))
    return out


def nft(script: str) -> None:
    """Apply an nftables script (``nft -f -``): the drills' network faults."""
    subprocess.run(["nft", "-f", "-"], input=script.encode(), check=True, capture_output=True, timeout=10)


class Partition:
    """An nftables black hole around one workstation (see the module docstring); ``heal()`` removes it."""

    def __init__(self, state: dict[str, Any], node: str) -> None:
        if shutil.which("nft") is None:
            raise EdgepairError("partition needs nftables (`nft`) and CAP_NET_ADMIN: install nftables or skip it")
        self.state = state
        self.node = node
        self.table = f"edgepair_drill_{os.getpid()}"
        nodes = state["nodes"]
        self.flight = int(nodes[node]["flight"].rsplit(":", 1)[1])
        self.etcd_ports = {int(v["endpoint"].rsplit(":", 1)[1]) for n, v in state["etcd"].items() if n != node}
        self.member_pid = state["etcd"][node].get("pid")
        self.blocked: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cut(self) -> None:
        nft(
            f"table inet {self.table} {{\n set agent {{ type inet_service; }}\n"
            f" chain out {{ type filter hook output priority -10; policy accept;\n"
            f"  tcp dport {self.flight} drop\n  tcp sport {self.flight} drop\n"
            f"  tcp sport @agent drop\n  tcp dport @agent drop\n }}\n}}\n"
        )
        if self.member_pid:
            os.kill(self.member_pid, signal.SIGSTOP)
        self._follow()
        self._thread = threading.Thread(target=self._follow_loop, name="partition", daemon=True)
        self._thread.start()
        log.info(
            "drill: %s cut off (flight port %d, etcd member frozen, agent sockets dropped)", self.node, self.flight
        )

    def _follow(self) -> None:
        pid = agent_pid(self.state, self.node)
        new = _socket_ports(pid, self.etcd_ports) - self.blocked
        if new:
            nft("".join(f"add element inet {self.table} agent {{ {p} }}\n" for p in sorted(new)))
            self.blocked |= new

    def _follow_loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self._follow()
            except (subprocess.SubprocessError, OSError) as exc:
                log.warning("drill: partition: could not follow the agent's sockets: %s", exc)

    def heal(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            nft(f"delete table inet {self.table}\n")
        except subprocess.CalledProcessError as exc:
            log.warning("drill: partition: table %s not removed: %s", self.table, exc.stderr.decode().strip())
        if self.member_pid and _alive(self.member_pid):
            os.kill(self.member_pid, signal.SIGCONT)
        log.info("drill: %s reconnected", self.node)


# ---- gray failures: a workstation alive but broken --------------------------------------------------------------


def inference_pid(state: dict[str, Any], node: str) -> int:
    """The pid of the node's Ray ``InferenceServer`` actor process (one per node), among the agent's descendants."""
    found = [
        p
        for p in descendants(int(state["nodes"][node]["pid"]))
        if cmdline(p)[:1] and cmdline(p)[0].startswith("ray::InferenceServer")
    ]
    if len(found) != 1:
        raise EdgepairError(f"hang-inference: {len(found)} ray::InferenceServer processes under {node}'s agent, not 1")
    return found[0]


def tmpfs_of(data_dir: Path) -> Path:
    """The data dir itself when it is a dedicated tmpfs mount; the drill fills or remounts nothing else."""
    path = Path(data_dir).resolve()
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == str(path) and parts[2] == "tmpfs":
            return path
    raise EdgepairError(
        f"{path} is not a dedicated tmpfs mount: disk-full and readonly-disk fill or remount only such a mount "
        f"(mount one before `pair up`: mount -t tmpfs -o size=512m tmpfs {path}); never the real disk"
    )


@contextlib.contextmanager
def tmpfs_data_dirs(run_dir: Path, nodes: list[str], size: str = "320m") -> Iterator[None]:
    """Mount a dedicated tmpfs on each node's data dir of a pair to be started from ``run_dir`` (the dirs ``pair up``
    gives the nodes: ``<run_dir>/<node>/data``), for ``disk-full`` and ``readonly-disk``; unmounted at the end, after
    the pair is down. Needs root (CAP_SYS_ADMIN)."""
    mounts: list[Path] = []
    try:
        for node in nodes:
            data = Path(run_dir) / node / "data"
            data.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(data)], check=True)
            mounts.append(data)
        yield
    finally:
        for data in mounts:
            subprocess.run(["mount", "-o", "remount,rw", str(data)], check=False)
            subprocess.run(["umount", str(data)], check=False)


FILL_NAME = ".drill-fill"


def fill_tmpfs(data_dir: Path, leave_bytes: int) -> Path:
    """Fill the data dir's dedicated tmpfs until ``leave_bytes`` are free (below the node's minimum)."""
    mount = tmpfs_of(data_dir)
    free = shutil.disk_usage(mount).free
    path = mount / FILL_NAME
    with open(path, "wb") as f:
        chunk = b"\0" * (1 << 20)
        left = max(0, free - leave_bytes)
        while left > 0:
            f.write(chunk[: min(len(chunk), left)])
            left -= min(len(chunk), left)
        f.flush()
        os.fsync(f.fileno())
    log.info("drill: filled %s: %d bytes free now", mount, shutil.disk_usage(mount).free)
    return path


def remount(data_dir: Path, mode: str) -> None:
    """``mode``: "ro" or "rw", on the data dir's dedicated tmpfs only."""
    mount = tmpfs_of(data_dir)
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True, capture_output=True)
    log.info("drill: remounted %s %s", mount, mode)


def write_bad_key(state: dict[str, Any], key: str, value: str) -> None:
    """Write ``value`` (malformed on purpose) at ``/edgepair/<store>/<key>`` with the pair's admin identity."""
    from failover.etcd_dcs import EtcdDCS

    dcs = EtcdDCS(list(state["endpoints"]), str(state["store"]), ttl=2.0, timeout=2.0, identity=admin_identity(state))
    try:
        dcs.etcd.call("drill bad key", lambda c: c.put(dcs.key(key), value))
    finally:
        dcs.close()


def delete_key(state: dict[str, Any], key: str) -> None:
    from failover.etcd_dcs import EtcdDCS

    dcs = EtcdDCS(list(state["endpoints"]), str(state["store"]), ttl=2.0, timeout=2.0, identity=admin_identity(state))
    try:
        dcs.etcd.call("drill bad key removal", lambda c: c.delete(dcs.key(key)))
    finally:
        dcs.close()
