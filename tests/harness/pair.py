"""Test harness (not shipped in the product): drill helpers shared by the integration tests and
``bench/takeover.py``: two ``tests.harness.testnode`` processes
over one JSONL event log, bounded waits, and the "no camera ran twice at once" check.

When the cluster runs TLS (``EtcdCluster(cert_dir=...)``) each node process presents its own workstation
certificate from that folder, and the harness's own calls (the spread request) present the admin certificate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from cluster.waiting import wait_for
from failover.etcd_cluster import EtcdCluster

REPO = Path(__file__).resolve().parents[2]
CAMS = ("cam-1", "cam-2", "cam-3")


def store_pki(path: Path, store_id: str) -> Path:
    """A store CA with the certificates of a local pair, all naming 127.0.0.1: workstations ``ws-a`` and ``ws-b``
    (role node), the ``witness`` and the admin ``root``. Kept if the folder already holds them."""
    from cluster.pki import ADMIN_NAME, CA_CERT, CertDir

    pki = CertDir(path)
    if not (pki.path / CA_CERT).exists():
        pki.init(store_id)
    for name, role in (("ws-a", "node"), ("ws-b", "node"), ("witness", "witness"), (ADMIN_NAME, "admin")):
        if not pki.cert_path(name).exists():
            pki.issue(name, role, ["127.0.0.1", "localhost"])
    return pki.path


class Pair:
    """Two node processes sharing one event log; stopped by pid (SIGCONT then SIGKILL) in ``stop``."""

    def __init__(
        self,
        cluster: EtcdCluster,
        log: Path,
        store: str,
        ttl: float = 2,
        endpoints: dict[str, list[str]] | None = None,
    ) -> None:
        self.ttl = ttl
        self.cluster = cluster
        self.endpoints = endpoints or {}  # node -> the endpoints it dials (e.g. black-hole proxies), own member first
        self.log = log
        self.store = store
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        own = self.cluster.endpoint(name)
        endpoints = self.endpoints.get(name) or [own] + [e for e in self.cluster.endpoints if e != own]
        cmd = [sys.executable, "-m", "tests.harness.testnode", "--name", name, "--endpoints", ",".join(endpoints)]
        cmd += ["--store", self.store, "--cameras", ",".join(CAMS), "--ttl", str(self.ttl), "--log", str(self.log)]
        if self.cluster.cert_dir is not None:
            cmd += ["--cert-dir", str(self.cluster.cert_dir)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        out = open(self.log.with_name(f"{name}.out"), "ab")
        self.procs[name] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        out.close()

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.procs[name].pid, sig)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(proc.pid, sig)
                    except ProcessLookupError:
                        break
                proc.wait(timeout=10)

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def running(self) -> dict[str, set[str]]:
        """Node -> cameras running now, from the start/stop events."""
        state: dict[str, set[str]] = {"ws-a": set(), "ws-b": set()}
        for e in self.events():
            if e["event"] == "start":
                state[e["node"]].add(e["camera"])
            elif e["event"] == "stop":
                state[e["node"]].discard(e["camera"])
        return state

    def leaders(self) -> list[tuple[str, int]]:
        return [(e["node"], e["token"]) for e in self.events() if e["event"] == "leader"]

    def wait_all_on(self, name: str, timeout: float = 15) -> None:
        wait_for(lambda: self.running()[name] == set(CAMS), timeout, f"{name} to run every camera")

    def wait_spread(self, timeout: float = 15) -> dict[str, set[str]]:
        def spread() -> dict[str, set[str]] | None:
            run = self.running()
            both = run["ws-a"] | run["ws-b"]
            return run if both == set(CAMS) and run["ws-a"] and run["ws-b"] else None

        return wait_for(spread, timeout, "both nodes to run the cameras between them")

    def spread_cameras(self, timeout: float = 15) -> dict[str, set[str]]:
        """Once both nodes are members, ask the leader for an even spread (assignment is sticky: a node that joins
        late gets nothing by itself), wait for it, and withdraw the request so that no later event re-spreads."""
        from failover.etcd_dcs import EtcdDCS

        dcs = EtcdDCS(
            self.cluster.endpoints, self.store, ttl=self.ttl, timeout=1.0, identity=self.cluster.client_identity()
        )
        try:
            wait_for(lambda: set(dcs.get_cluster().members) == {"ws-a", "ws-b"}, timeout, "both nodes to join")
            dcs.set_rebalance(True)
            run = self.wait_spread(timeout)
            dcs.set_rebalance(False)
            return run
        finally:
            dcs.close()


def intervals(events: list[dict[str, Any]]) -> list[tuple[str, str, float, float]]:
    """(camera, node, start mono, stop mono or +inf) for every run of a camera."""
    open_: dict[tuple[str, str], float] = {}
    out = []
    for e in sorted(events, key=lambda e: e["mono"]):
        key = (e.get("camera", ""), e["node"])
        if e["event"] == "start":
            open_[key] = e["mono"]
        elif e["event"] == "stop" and key in open_:
            out.append((key[0], key[1], open_.pop(key), e["mono"]))
    out += [(c, n, s, float("inf")) for (c, n), s in open_.items()]
    return out


def double_runs(events: list[dict[str, Any]]) -> list[str]:
    """Every camera that ran on two nodes at overlapping times, as a sentence each."""
    runs = intervals(events)
    found = []
    for i, (cam, node, s1, e1) in enumerate(runs):
        for cam2, node2, s2, e2 in runs[i + 1 :]:
            if cam == cam2 and node != node2 and not (e1 <= s2 or e2 <= s1):
                found.append(f"{cam} ran on {node} and {node2} at once")
    return found
