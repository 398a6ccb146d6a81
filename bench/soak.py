"""Soak: a local pair under full load for a given time, counting what a short lease must never cause (issue 21).

The pair runs every camera of the config at its full rate (``--cameras N`` clones them up to N), while beside it, at
the same priority: ``--hogs`` processes spinning on the CPU, one process churning ``--memory-mib`` of memory (allocate,
touch every page, free, again) and one writing ``--disk-mib-s`` to the run dir's disk with an fsync each 4 MiB. Each
node's ``/health`` is read every second. Printed at the end:

- spurious failovers: leader changes and camera moves (no fault is injected, so every one is spurious);
- fence pauses: times a camera worker paused because its node's lease was not renewed in time;
- unhealthy verdicts: samples where a node's measured health was bad, with the reasons seen;
- frames dropped by backpressure, per camera (dropping the oldest frame is the designed answer to overload: reported,
  not a failure);
- the distributions (count, p50, p90, p99, p99.9, max) of the lease renewal round trip, of the time between two
  successful renewals (the fence lapses when it exceeds ``fence fraction x TTL``: the margin is printed), and of the
  inference probe's answer time (against ``cluster.health.inference_deadline_s``).

Exit status 1 when a spurious failover or a fence pause happened. Usage (as any user; stops everything it started by
pid, on Ctrl-C too):

    PYTHONPATH=. python bench/soak.py [--minutes 60] [--config cluster/examples/pair.yaml] [--ttl-s 2]
                                      [--cameras 4] [--hogs 2] [--memory-mib 2048] [--disk-mib-s 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from cluster.pair import node_health, pair_down, pair_up, stop_pid
from failover.fence import FENCE_FRACTION

HOG = "while True: pass"
MEMORY = """
import sys, time
mib = int(sys.argv[1])
while True:
    b = bytearray(mib * 1024 * 1024)
    for i in range(0, len(b), 4096):
        b[i] = 1
    del b
    time.sleep(0.2)
"""
DISK = """
import os, sys, time
path, rate = sys.argv[1], float(sys.argv[2])
chunk = os.urandom(4 * 1024 * 1024)
written = 0
with open(path, "wb") as f:
    while True:
        t = time.monotonic()
        f.write(chunk); f.flush(); os.fsync(f.fileno())
        written += len(chunk)
        if written >= 256 * 1024 * 1024:
            f.seek(0); f.truncate(); written = 0
        time.sleep(max(0.0, len(chunk) / (rate * 1024 * 1024) - (time.monotonic() - t)))
"""


def soak_config(src: Path, out: Path, cameras: int | None, ttl_s: float | None) -> Path:
    """The config to soak: ``src`` with its cameras cloned up to ``cameras`` and its TTL set, data dir in ``out``."""
    data = yaml.safe_load(src.read_text())
    base = src.parent.resolve()
    cams = data["cameras"]
    for c in cams:
        source = str(c["source"])
        if "://" not in source and not Path(source).is_absolute():
            c["source"] = str(base / source)
    if cameras:
        cams = [dict(cams[k % len(cams)], id=f"cam-{k + 1}") for k in range(cameras)]
    data["cameras"] = cams
    data.setdefault("storage", {})["data_dir"] = str(out / "data")
    if ttl_s:
        data.setdefault("cluster", {})["ttl_s"] = ttl_s
    path = out / "soak.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_load(args: argparse.Namespace, run_dir: Path) -> list[subprocess.Popen[bytes]]:
    procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    if args.memory_mib:
        procs.append(subprocess.Popen([sys.executable, "-c", MEMORY, str(args.memory_mib)]))
    if args.disk_mib_s:
        procs.append(
            subprocess.Popen([sys.executable, "-c", DISK, str(run_dir / "disk-load.bin"), str(args.disk_mib_s)])
        )
    return procs


class Watch:
    """What the samples of /health showed: leaders, camera owners, fence pauses, unhealthy verdicts, drops."""

    def __init__(self) -> None:
        self.samples = 0
        self.leader: str | None = None
        self.leader_changes: list[tuple[float, str | None, str | None]] = []
        self.owner: dict[str, str] = {}
        self.moves: list[tuple[float, str, str, str]] = []
        self.fence_pauses: dict[tuple[str, str], int] = {}
        self.unhealthy: dict[str, int] = {}
        self.reasons: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self.unanswered = 0

    def add(self, t: float, hs: dict[str, dict[str, Any] | None]) -> None:
        self.samples += 1
        leaders = {h.get("leader") for h in hs.values() if h}
        if len(leaders) == 1:
            (leader,) = leaders
            if leader and self.leader and leader != self.leader:
                self.leader_changes.append((t, self.leader, leader))
            self.leader = leader or self.leader
        for node, h in hs.items():
            if h is None:
                self.unanswered += 1
                continue
            for cam in h.get("cameras", []):
                prev = self.owner.get(cam)
                if prev is not None and prev != node:
                    self.moves.append((t, cam, prev, node))
                self.owner[cam] = node
            for cam, n in (h.get("fence_pauses") or {}).items():
                self.fence_pauses[(node, cam)] = max(self.fence_pauses.get((node, cam), 0), int(n))
            for cam, st in (h.get("camera_status") or {}).items():
                self.dropped[(node, cam)] = max(self.dropped.get((node, cam), 0), int(st.get("dropped") or 0))
            if h.get("member_healthy") is False:
                self.unhealthy[node] = self.unhealthy.get(node, 0) + 1
                for r in h.get("health_reasons") or []:
                    key = r.split(":")[0]
                    self.reasons[key] = self.reasons.get(key, 0) + 1


def fmt(d: dict[str, Any]) -> str:
    if not d or not d.get("count"):
        return "no samples"
    ms = {k: f"{1000 * d[k]:.0f}" for k in ("p50", "p90", "p99", "p99.9", "max")}
    return (
        f"n={d['count']}  p50 {ms['p50']} ms  p90 {ms['p90']} ms  p99 {ms['p99']} ms  p99.9 {ms['p99.9']} ms"
        f"  max {ms['max']} ms"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--config", default="cluster/examples/pair.yaml")
    p.add_argument("--ttl-s", type=float, default=None, help="cluster.ttl_s to soak (default: the config's)")
    p.add_argument("--cameras", type=int, default=None, help="clone the config's cameras up to this many")
    p.add_argument("--hogs", type=int, default=2, help="processes spinning on the CPU beside the pair")
    p.add_argument("--memory-mib", type=int, default=2048, help="memory churned beside the pair (0: none)")
    p.add_argument("--disk-mib-s", type=float, default=20.0, help="disk writes beside the pair (0: none)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="edgepair-soak-"))
    config = soak_config(Path(args.config), out, args.cameras, args.ttl_s)
    ttl = float(yaml.safe_load(config.read_text()).get("cluster", {}).get("ttl_s", 2.0))
    run_dir = out / "pair"
    state = pair_up(config, run_dir)
    load: list[subprocess.Popen[bytes]] = []
    watch = Watch()
    final: dict[str, dict[str, Any] | None] = {}
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        time.sleep(10)  # the cameras are assigned and running before the load starts
        load = start_load(args, run_dir)
        print(
            f"soaking {args.minutes:g} min from {started}: {len(state['nodes'])} nodes, TTL {ttl:g} s, load: "
            f"{args.hogs} CPU hogs, {args.memory_mib} MiB memory churn, {args.disk_mib_s:g} MiB/s disk",
            flush=True,
        )
        t0 = time.monotonic()
        end = t0 + 60 * args.minutes
        next_print = t0 + 60
        while time.monotonic() < end:
            tick = time.monotonic()
            final = {n: node_health(state, n, timeout=2.0) for n in state["nodes"]}
            watch.add(tick - t0, final)
            if tick >= next_print:
                next_print += 60
                print(
                    f"  {(tick - t0) / 60:.0f} min: leader changes {len(watch.leader_changes)}, camera moves "
                    f"{len(watch.moves)}, fence pauses {sum(watch.fence_pauses.values())}",
                    flush=True,
                )
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        for proc in load:
            stop_pid(proc.pid, 5)
        pair_down(run_dir)
    return report(args, watch, final, ttl, started)


def report(
    args: argparse.Namespace, watch: Watch, final: dict[str, dict[str, Any] | None], ttl: float, started: str
) -> int:
    fence_s = FENCE_FRACTION * ttl
    pauses = sum(watch.fence_pauses.values())
    spurious = len(watch.leader_changes) + len(watch.moves)
    print(f"\n=== soak {args.minutes:g} min from {started}, TTL {ttl:g} s (fence at {fence_s:.2f} s) ===")
    print(f"samples of /health: {watch.samples} per node; unanswered {watch.unanswered}")
    print(
        f"spurious failovers: {spurious} (leader changes {len(watch.leader_changes)}, camera moves {len(watch.moves)})"
    )
    for t, a, b in watch.leader_changes:
        print(f"  {t:.0f} s: leader {a} -> {b}")
    for t, cam, a, b in watch.moves:
        print(f"  {t:.0f} s: {cam} {a} -> {b}")
    print(f"fence pauses: {pauses}")
    print(f"unhealthy samples: {watch.unhealthy or 0}; reasons: {watch.reasons or '-'}")
    print("frames dropped (backpressure): " + ", ".join(f"{n}/{c} {v}" for (n, c), v in sorted(watch.dropped.items())))
    figures: dict[str, Any] = {"spurious": spurious, "fence_pauses": pauses, "ttl_s": ttl, "nodes": {}}
    for node, h in sorted(final.items()):
        timing = (h or {}).get("timing") or {}
        figures["nodes"][node] = timing
        print(f"{node}:")
        for key, label in (
            ("renew_rtt", "lease renewal round trip"),
            ("renew_gap", "time between renewals"),
            ("inference_probe", "inference probe answer"),
        ):
            print(f"  {label:26s} {fmt(timing.get(key) or {})}")
        gap = (timing.get("renew_gap") or {}).get("max")
        if gap is not None:
            print(f"  margin to the fence: {fence_s - gap:.2f} s ({fence_s:.2f} s fence - {gap:.2f} s longest gap)")
    if args.json:
        seen = {k: ({"/".join(kk): vv for kk, vv in v.items()} if k in ("fence_pauses", "dropped") else v)
                for k, v in vars(watch).items()}  # fmt: skip
        Path(args.json).write_text(json.dumps({**figures, "watch": seen}, indent=2, default=str))
    ok = spurious == 0 and pauses == 0
    print("RESULT: " + ("OK (0 spurious failovers, 0 fence pauses)" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
