"""Takeover time: from the fault on the leader node to the first camera running on the survivor.

    PYTHONPATH=. python bench/takeover.py --runs 10 --ttl 2 [--modes plain,tls]

Real 3-member etcd on loopback (heartbeat 50 ms, election 500 ms), two ``tests.harness.testnode`` processes, three
cameras. Scenarios: ``sigkill`` (leader process killed), ``sigstop`` (leader process frozen), ``member`` (the leader
process and its own etcd member killed together, as when the leader's workstation loses power; the member is
restarted after the run) and ``partition`` (the leader cut off from every etcd member by a black-hole proxy,
``tests.harness.blackhole``). Each run uses a fresh store id; the table gives median and max takeover, and the number of
runs in which a camera ran on both nodes at once (must be 0).

Modes: ``tls`` is the cluster as a store runs it (mutual TLS on client and peer URLs, etcd auth, each node its own
etcd user); ``plain`` is the plain-text opt-out. Both run in the same invocation, one cluster each, and the last table
gives the cost of TLS on the median per scenario against the bound of the security issue (at most 0.2 s); the exit
code is 1 when a camera ran twice or TLS costs more than the bound.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from failover.etcd_cluster import EtcdCluster
from tests.harness.blackhole import Partition
from tests.harness.pair import CAMS, Pair, double_runs, store_pki, wait_for

SCENARIOS = ("sigkill", "sigstop", "member", "partition")
MODES = ("plain", "tls")


def one_run(cluster: EtcdCluster, workdir: Path, store: str, scenario: str, ttl: float) -> tuple[float, int]:
    parts: dict[str, Partition] = {}
    if scenario == "partition":
        for name in ("ws-a", "ws-b"):
            own = cluster.endpoint(name)
            parts[name] = Partition([own] + [e for e in cluster.endpoints if e != own], name=name)
    endpoints = {n: p.endpoints for n, p in parts.items()}
    if cluster.secure:
        cluster.authorize(store)  # each run is a store of its own: its prefix is granted to ws-a and ws-b
    pair = Pair(cluster, workdir / f"{store}.jsonl", store=store, ttl=ttl, endpoints=endpoints)
    killed_member = ""
    try:
        pair.start("ws-a")
        wait_for(pair.leaders, 15, "ws-a to lead")
        pair.start("ws-b")
        pair.spread_cameras()
        old = pair.leaders()[-1][0]
        survivor = "ws-b" if old == "ws-a" else "ws-a"
        mine = pair.running()[old]
        fault = time.monotonic()
        if scenario == "partition":
            parts[old].cut()
        elif scenario == "member":
            pair.signal(old, signal.SIGKILL)
            cluster.stop_member(old, signal.SIGKILL, timeout=5)
            killed_member = old
        else:
            pair.signal(old, signal.SIGKILL if scenario == "sigkill" else signal.SIGSTOP)
        wait_for(lambda: pair.running()[survivor] == set(CAMS), 20, f"{survivor} to run every camera")
        starts = [
            e["mono"]
            for e in pair.events()
            if e["event"] == "start" and e["node"] == survivor and e["camera"] in mine and e["mono"] > fault
        ]
        return min(starts) - fault, len(double_runs(pair.events()))
    finally:
        pair.stop()
        for part in parts.values():
            part.close()
        if killed_member:
            cluster.start_member(killed_member)
            cluster.wait_healthy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="takeover time of the edgepair failover loop")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--modes", default=",".join(MODES), help="plain (the opt-out), tls (TLS and etcd auth)")
    parser.add_argument("--bound", type=float, default=0.2, help="most seconds TLS may add to a takeover median")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    modes = args.modes.split(",")
    if set(modes) - set(MODES):
        parser.error(f"unknown mode in {args.modes!r}; choose from {', '.join(MODES)}")
    rows: dict[tuple[str, str], tuple[int, float, float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="edgepair-takeover-") as tmp:
        for mode in modes:
            cert_dir = store_pki(Path(tmp) / "pki", "bench") if mode == "tls" else None
            with EtcdCluster(Path(tmp) / f"etcd-{mode}", cert_dir=cert_dir) as cluster:
                for scenario in args.scenarios.split(","):
                    times, doubles = [], 0
                    for i in range(args.runs):
                        took, dup = one_run(cluster, Path(tmp), f"{mode}-{scenario}-{i}", scenario, args.ttl)
                        times.append(took)
                        doubles += dup > 0
                        print(f"{mode} {scenario} run {i + 1}: {took:.2f}s", file=sys.stderr)
                    rows[mode, scenario] = (len(times), statistics.median(times), max(times), doubles)
    header = f"{'mode':<6} {'scenario':<10} {'runs':>4} {'median s':>9} {'max s':>7} {'double runs':>11}"
    print(f"{header}  (ttl {args.ttl:g}s)")
    for (mode, scenario), (n, med, mx, doubles) in rows.items():
        print(f"{mode:<6} {scenario:<10} {n:>4} {med:>9.2f} {mx:>7.2f} {doubles:>11}")
    over = []
    if set(modes) == set(MODES):
        print(f"\nTLS cost on the takeover median (bound {args.bound:g} s):")
        for scenario in args.scenarios.split(","):
            cost = rows["tls", scenario][1] - rows["plain", scenario][1]
            verdict = "ok" if cost <= args.bound else "OVER"
            if cost > args.bound:
                over.append(scenario)
            print(f"  {scenario:<10} {cost:+.2f} s  {verdict}")
    return 1 if over or any(r[3] for r in rows.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
